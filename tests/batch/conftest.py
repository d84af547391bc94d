"""Real components for batch jobs: one local Ray cluster per test session (shared with the
server tests when both run), and a real S3 API — moto in server mode on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import batch_support
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray
    import ray.cloudpickle

    from sheaf_core import RayServeSettings
    from sheaf_server.ray import runner

    # Started as the server tests start theirs (the cluster environment Serve needs), so
    # that one cluster serves both folders when they run in one session.
    started = runner.connect(None, RayServeSettings(), num_cpus=2, include_dashboard=False,
                             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    ray.cloudpickle.register_pickle_by_value(batch_support)  # workers cannot import it
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3() -> Iterator[dict]:
    """fsspec storage options for a fresh moto S3 server with a bucket named `jobs`."""
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {"key": "test", "secret": "test",
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                 "region_name": "eu-west-1"}}
    s3fs.S3FileSystem(**options).mkdir("jobs")
    try:
        yield options
    finally:
        server.stop()
