"""Real components shared by every test folder: an S3 API (moto in server mode on
127.0.0.1), for batch jobs and for payloads named by URI; the wheels `./dev wheels` builds
from this checkout, for the install and image tests. And the markers each test gets from
what it uses (`ray`, `models`, `slow`; `container` is set by the image tests), so that
`./dev test --fast` can leave those out."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_support import RedisServer


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis on 127.0.0.1 for this test (AOF on, fsync always), stopped after."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop(kill=True)


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = 8


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`./dev wheels --out DIR`: every package's wheel and sdist, checked by twine."""
    out = tmp_path_factory.mktemp("dist")
    ran = subprocess.run(["bash", str(ROOT / "dev"), "wheels", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("PASSED") == 2 * PACKAGES, ran.stdout
    assert f"pip install --find-links {out} sheaf-core sheaf-server sheaf-backend-chronos" \
        in ran.stdout
    assert len(list(out.glob("*.whl"))) == PACKAGES == len(list(out.glob("*.tar.gz")))
    return out


#: Tests that load real model libraries (torch, transformers, diffusers, PhysicsNeMo).
MODEL_TESTS = ("tests/plugins/", "tests/server/test_models_together.py",
               "tests/server/test_payloads.py", "tests/batch/")
#: Tests that take minutes: fresh venvs, fuzzing, another package's venv.
SLOW_TESTS = ("tests/packaging/test_wheels.py", "tests/server/test_fuzz.py",
              "tests/server/test_sheaf_serve_clients.py")
#: Fixtures that start (or join) a Ray cluster, and what names the tests that start one
#: through the CLI.
RAY_FIXTURES = {"ray_cluster", "ray_session", "ray_env"}
RAY_NAMES = ("on_ray", "ray_host", "ray_alone", "both_hosts")
RAY_TESTS = ("tests/server/test_ray_logs.py", "tests/server/test_ray_faults.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks from what a test uses: `ray` (a Ray fixture, the Ray host, or Ray in its
    name: the CLI tests that start one), `models`, `slow`. Select with -m."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        names = set(getattr(item, "fixturenames", ()))
        if names & RAY_FIXTURES or "[ray" in item.nodeid or path.startswith(RAY_TESTS) \
                or any(part in item.name for part in RAY_NAMES):
            item.add_marker(pytest.mark.ray)
        if path.startswith(MODEL_TESTS):
            item.add_marker(pytest.mark.models)
        if path.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
