"""Tier 1 in a background thread: uvicorn serving the app over a local `Engine`, with the
engine's event loop reachable from other threads (hot swap from `ModelServer.update`)."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import uvicorn

from sheaf_core.errors import ConfigError
from sheaf_core.spec import ModelSpec
from sheaf_server.asgi.app import create_app
from sheaf_server.engine import Engine
from sheaf_server.settings import SheafConfig, TLSSettings


def tls_options(tls: TLSSettings | None) -> dict[str, Any]:
    """uvicorn's TLS arguments for `server.tls` (none: plain HTTP). The files are read when
    the server starts; a missing or unreadable one fails the start, naming it."""
    if tls is None:
        return {}
    for field in ("certfile", "keyfile", "ca_certs"):
        path = getattr(tls, field)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"server.tls.{field}: cannot read {path!r}")
    requirement = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                   "required": ssl.CERT_REQUIRED}[tls.client_auth]
    return {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile,
            "ssl_ca_certs": tls.ca_certs, "ssl_cert_reqs": requirement}


class AsgiHost:
    def __init__(self, config: SheafConfig, *, host: str, port: int,
                 plugins: Iterable[object] = (), log_level: str = "info") -> None:
        settings = config.server
        self.engine = Engine(config.models, settings, plugins=plugins,  # bad kwargs fail here
                             pipelines=config.pipelines)
        self.scheme = "https" if settings.tls else "http"
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.engine, jobs=config.jobs), host=host, port=port,
            log_level=log_level.lower(),
            access_log=False, log_config=None,  # sheaf's own access log (asgi/metrics.py)
            timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
            **tls_options(settings.tls)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="sheaf-uvicorn", daemon=True)

    def _run(self) -> None:
        factory = self.server.config.get_loop_factory()
        loop = factory() if factory else asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.server.serve())
        finally:
            loop.close()

    def start(self, timeout_s: float = 60.0) -> str:
        """Bind and start serving (models load in the background); the URL."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped while starting (is the port "
                                   "taken? see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the HTTP server did not start within {timeout_s:.0f}s")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"{self.scheme}://{shown}:{port}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def model_states(self) -> dict[str, dict[str, Any]]:
        """Each model's and pipeline's state and reason, as /ready lists them."""
        return self.engine.readiness()[1]

    def update(self, spec: ModelSpec) -> None:
        """Hot-swap on the server's own loop; returns once new requests use `spec`."""
        if self._loop is None or not self.alive:
            raise RuntimeError("the server is not running")
        asyncio.run_coroutine_threadsafe(self.engine.update(spec), self._loop).result()

    def stop(self) -> None:
        """Graceful: stop accepting, drain in-flight work, release backends."""
        self.server.should_exit = True
        if self._thread.ident is not None:  # stopped before start(): nothing runs yet
            self._thread.join()
