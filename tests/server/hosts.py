"""What the HTTP behaviour suite serves through: `Host` runs a test's specs on tier 1
(uvicorn in a thread; or, "multi", HTTP and model worker processes) or on Ray Serve (the
session's local cluster), `wait_until_ready` waits for /ready, `Flag` names a file a test
creates to steer the scripted backend. Fixtures that hand them out are in conftest.py;
test modules import these names from here (a module named for what it holds, so that any
set of test folders collects together)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx
import pytest
from server_support import ScriptedPlugin

from sheaf_core import ModelSpec, PipelineSpec
from sheaf_server import ModelServer, testing
from sheaf_server.settings import JobSettings, ServerSettings, SheafConfig

Flag = Callable[[str], str]


class RayCluster:
    def __init__(self, port: int) -> None:
        self.port = port


class Host:
    """Serves specs on one host through `ModelServer`; tests talk to it over HTTP, and
    drive it (`host.server.update`) as a user's code would."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._request = request
        self.server: ModelServer | None = None

    @contextmanager
    def serve(self, *specs: ModelSpec, wait_ready: bool = True,
              pipelines: Sequence[PipelineSpec] = (), jobs: JobSettings | None = None,
              **settings: object) -> Iterator[httpx.Client]:
        if self.name != "ray":  # one process, or HTTP workers and a model worker, on any
            settings.setdefault("workers", 2 if self.name == "multi" else 1)  # machine
        config = SheafConfig(models=list(specs), pipelines=list(pipelines),
                             server=ServerSettings(**settings), jobs=jobs)
        if self.name in ("asgi", "multi"):
            server = ModelServer(config, port=0, plugins=[ScriptedPlugin()],
                                 log_level="warning")
        else:  # the session's cluster: RayHost joins it, and leaves it running at stop()
            cluster: RayCluster = self._request.getfixturevalue("ray_cluster")
            server = ModelServer(config, runtime="ray", host="127.0.0.1", port=cluster.port,
                                 plugins=[ScriptedPlugin()])
        with server, httpx.Client(base_url=server.url or "", timeout=30) as client:
            self.server = server
            if wait_ready:
                wait_until_ready(client)
            yield client


def wait_until_ready(client: httpx.Client, timeout: float = 60) -> None:
    testing.wait_until_ready(client, timeout)


