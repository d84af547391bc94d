"""An HTTP worker process: the one FastAPI app (`create_app`) over a `ProcessEngine`, served
by uvicorn on its own listening socket bound with SO_REUSEPORT beside its siblings'.

Why SO_REUSEPORT, not one socket shared by every worker: the kernel spreads new
connections evenly over the listening sockets, whereas with one shared socket the first
worker to wake accepts a whole burst of connections (a load balancer's pool of keep-alive
connections ends up in one process, the others idle). The supervisor holds the port
reserved (bound, not listening) for the server's lifetime.
"""

from __future__ import annotations

import asyncio
import math
import pathlib
import socket

import uvicorn

from sheaf_server.asgi.app import create_app
from sheaf_server.asgi.host import tls_options
from sheaf_server.settings import RateLimit, ServerSettings
from sheaf_server.workers.child import HttpWorkerRole
from sheaf_server.workers.process_engine import CONNECT_AT_START_S, ProcessEngine


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (listening is left to the caller:
    the supervisor's reservation never listens)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_settings(settings: ServerSettings, workers: int) -> ServerSettings:
    """The settings one of `workers` HTTP workers enforces: its share of each rate limit
    (connections spread evenly, so together they admit about the configured rate)."""
    limits = settings.rate_limits
    if workers == 1 or (limits.per_key is None and limits.per_model is None):
        return settings

    def share(limit: RateLimit | None) -> RateLimit | None:
        if limit is None:
            return None
        burst = limit.burst if limit.burst is not None else math.ceil(limit.requests_per_s)
        return RateLimit(requests_per_s=limit.requests_per_s / workers,
                         burst=max(1, math.ceil(burst / workers)))

    shared = limits.model_copy(update={"per_key": share(limits.per_key),
                                       "per_model": share(limits.per_model)})
    return settings.model_copy(update={"rate_limits": shared})


def serve_http(role: HttpWorkerRole) -> None:
    """Serve until SIGTERM (uvicorn's graceful shutdown: stop accepting, finish what is in
    flight within `server.drain_timeout_s`)."""
    config = role.config
    settings = worker_settings(config.server, role.workers)
    engine = ProcessEngine(config.models, role.sockets, settings, plugins=role.plugins,
                           pipelines=config.pipelines, connect_at_start_s=CONNECT_AT_START_S)
    # Not listening yet: uvicorn listens after the lifespan has started the engine (its
    # links connected), so the kernel sends this worker no connection before it can serve.
    sock = reuseport_socket(role.host, role.port)
    server = uvicorn.Server(uvicorn.Config(
        create_app(engine, jobs=config.jobs), log_level=role.log_level.lower(),
        access_log=False, log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        **tls_options(settings.tls)))

    async def run() -> None:
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            pathlib.Path(role.ready_file).touch()
        await serving

    factory = server.config.get_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
