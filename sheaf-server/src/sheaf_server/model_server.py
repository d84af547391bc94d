"""`ModelServer`: a sheaf server driven from Python — start it, hot-swap a model while
traffic flows, stop it — on either host. `sheaf-server serve` runs one.

    with ModelServer(load_config("sheaf.yaml")) as server:      # or runtime="ray"
        server.update(spec.model_copy(update={"backend_kwargs": {"model_id": "v2"}}))

An update keeps the model's name and model type (its routes); it may change the weights,
backend kwargs, batching and deadline. No request fails because of it: the new backend
loads while the old one serves, then new requests go to the new one and the old one
finishes what it had. Adding or removing models needs a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from sheaf_core.errors import ConfigError
from sheaf_core.spec import ModelSpec
from sheaf_server.settings import ServedModelSpec, SheafConfig, served

log = logging.getLogger("sheaf.server")
Runtime = Literal["asgi", "ray"]


class _Host(Protocol):
    @property
    def alive(self) -> bool: ...

    def start(self) -> str: ...

    def update(self, spec: ModelSpec) -> None: ...

    def model_states(self) -> dict[str, dict[str, Any]]: ...

    def stop(self) -> None: ...


class ModelServer:
    """A running server: `start()` → URL, `update(spec)`, `reload(config)`, `stop()`.

    runtime "asgi": uvicorn in a background thread of this process. "ray": Ray Serve on a
    local cluster started here, or the cluster at `address`. `host`/`port` default to the
    config's `server` settings (port 0 picks a free port; `url` tells which).
    """

    def __init__(self, config: SheafConfig | Iterable[ModelSpec], *, runtime: Runtime = "asgi",
                 host: str | None = None, port: int | None = None, address: str | None = None,
                 plugins: Iterable[object] = (), log_level: str = "info") -> None:
        if not isinstance(config, SheafConfig):
            config = SheafConfig(models=[served(spec) for spec in config])
        self.config = config
        self.runtime = runtime
        self.url: str | None = None
        host = host or config.server.host
        port = config.server.port if port is None else port
        if runtime == "asgi":
            if address:
                raise ConfigError("address: only applies to runtime 'ray'")
            from sheaf_server.workers.supervisor import ProcessHost, uses_processes

            if uses_processes(config):
                self._host: _Host = ProcessHost(config, host=host, port=port,
                                                plugins=plugins, log_level=log_level)
            else:
                from sheaf_server.asgi.host import AsgiHost

                self._host = AsgiHost(config, host=host, port=port, plugins=plugins,
                                      log_level=log_level)
        elif runtime == "ray":
            try:
                from sheaf_server.ray.host import RayHost
            except ImportError as exc:
                raise ConfigError(f"runtime 'ray' needs Ray: pip install 'sheaf-server[ray]' "
                                  f"({exc})") from None
            self._host = RayHost(config, host=host, port=port, address=address,
                                 plugins=plugins)
        else:
            raise ConfigError(f"runtime: {runtime!r} is not one of 'asgi', 'ray'")

    def start(self) -> str:
        """Serve; returns the URL once the HTTP side answers (models may still be loading:
        /ready says when they are)."""
        self.url = self._host.start()
        return self.url

    @property
    def alive(self) -> bool:
        return self._host.alive

    def processes(self) -> dict[str, int]:
        """The server's processes by role ("HTTP worker 1", "model 'm' worker 1"), when
        tier 1 runs as several (`server.workers`, `replicas`); {} otherwise."""
        processes = getattr(self._host, "processes", None)
        return processes() if processes is not None else {}

    def model_states(self) -> dict[str, dict[str, Any]]:
        """name → {"state": loading|ready|failed, "reason": ...} for every model and
        pipeline, as GET /ready lists them."""
        return self._host.model_states()

    def update(self, spec: ModelSpec) -> None:
        """Hot-swap the model named `spec.name`; returns once new requests are answered by
        `spec`. ConfigError (unknown model, bad kwargs, another model type) or UpdateFailed
        (the new weights did not load) leave the model serving as before."""
        data = dict(spec)
        current = next((m for m in self.config.models if m.name == spec.name), None)
        if not isinstance(spec, ServedModelSpec) and current is not None:
            data["ray"] = current.ray  # a plain ModelSpec keeps the model's Ray settings
            data["replicas"] = current.replicas  # and its worker processes
        try:  # re-validated: `model_copy(update=...)` does not validate what it sets
            spec = ServedModelSpec.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"model {spec.name!r}: the updated spec is invalid: "
                              + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                          for e in exc.errors())) from None
        self._host.update(spec)
        self.config = self.config.model_copy(update={"models": [
            spec if m.name == spec.name else m for m in self.config.models]})
        log.info("model %r updated", spec.name)

    def reload(self, config: SheafConfig) -> list[str]:
        """Apply an edited config: hot-swap every model whose spec changed; the names. The
        same models must be served and the server settings unchanged (else ConfigError
        naming what needs a restart); nothing is applied then."""
        old = {m.name: m for m in self.config.models}
        new = {m.name: m for m in config.models}
        if old.keys() != new.keys():
            added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
            raise ConfigError("models: adding or removing models needs a restart "
                              f"(added: {', '.join(added) or 'none'}; removed: "
                              f"{', '.join(removed) or 'none'})")
        if config.server != self.config.server:
            raise ConfigError("server: server settings changed; they apply at a restart")
        if config.pipelines != self.config.pipelines:
            raise ConfigError("pipelines: pipelines changed; they apply at a restart")
        changed = [name for name, spec in new.items() if spec != old[name]]
        for name in changed:
            self.update(new[name])
        return changed

    def stop(self) -> None:
        """Drain in-flight requests and release every backend (and a cluster started here)."""
        self._host.stop()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
