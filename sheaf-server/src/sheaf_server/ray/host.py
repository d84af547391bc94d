"""Ray Serve behind `ModelServer`: start or join a cluster, deploy, hot-swap, remove."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from typing import Any

from sheaf_core.spec import ModelSpec
from sheaf_server.ray import reaper, runner
from sheaf_server.settings import SheafConfig


class RayHost:
    def __init__(self, config: SheafConfig, *, host: str, port: int, address: str | None,
                 plugins: Iterable[object] = ()) -> None:
        self.config = config
        self.host, self.port, self.address = host, port, address
        self.plugins = tuple(plugins)
        self._started_cluster = False
        self._deployed = False
        self._reaper: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self) -> str:
        self._started_cluster = runner.connect(
            self.address, self.config.server.ray,
            **({} if self.address else {"include_dashboard": False}))
        if self._started_cluster:  # nothing of the cluster outlives this process
            self._reaper = reaper.start(os.getpid(), runner.cluster_processes())
        url = runner.deploy(self.config, host=self.host, port=self.port, plugins=self.plugins)
        self._deployed = True
        self.url = url
        return url

    @property
    def alive(self) -> bool:
        return self._deployed

    def model_states(self) -> dict[str, dict[str, Any]]:
        """Each model's and pipeline's state and reason, from the ingress's /ready (the
        replicas' states live in the cluster, not in this process)."""
        import httpx

        if self.url is None:
            return {}
        body = httpx.get(f"{self.url}/ready", timeout=10).json()
        return dict(body.get("models", {}))

    def update(self, spec: ModelSpec) -> None:
        self.config = runner.update(self.config, spec, plugins=self.plugins)

    def stop(self) -> None:
        try:
            if self._deployed:
                runner.undeploy(self.config)
                self._deployed = False
        finally:
            runner.shutdown(self._started_cluster)
            if self._reaper is not None:
                reaper.stop(self._reaper)  # what Ray's shutdown left (its HAProxy)
                self._reaper = None
