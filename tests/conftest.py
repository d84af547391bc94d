"""Real components shared by every test folder: an S3 API (moto in server mode on
127.0.0.1), for batch jobs and for payloads named by URI."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


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
