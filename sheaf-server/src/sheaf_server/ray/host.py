"""Ray Serve behind `ModelServer`: start or join a cluster, deploy, hot-swap, remove."""

from __future__ import annotations

from collections.abc import Iterable

from sheaf_core.spec import ModelSpec, SheafConfig
from sheaf_server.ray import runner


class RayHost:
    def __init__(self, config: SheafConfig, *, host: str, port: int, address: str | None,
                 plugins: Iterable[object] = ()) -> None:
        self.config = config
        self.host, self.port, self.address = host, port, address
        self.plugins = tuple(plugins)
        self._started_cluster = False
        self._deployed = False

    def start(self) -> str:
        self._started_cluster = runner.connect(
            self.address, self.config.server.ray,
            **({} if self.address else {"include_dashboard": False}))
        url = runner.deploy(self.config, host=self.host, port=self.port, plugins=self.plugins)
        self._deployed = True
        return url

    @property
    def alive(self) -> bool:
        return self._deployed

    def update(self, spec: ModelSpec) -> None:
        self.config = runner.update(self.config, spec, plugins=self.plugins)

    def stop(self) -> None:
        try:
            if self._deployed:
                runner.undeploy(self.config)
                self._deployed = False
        finally:
            runner.shutdown(self._started_cluster)
