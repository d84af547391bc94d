"""The entry of every process the supervisor starts (`ENTRY`), its role (a model worker or
an HTTP worker, and what it needs) pickled on stdin.

Why a fresh interpreter with a role on stdin rather than multiprocessing: nothing of the
parent is re-imported (a user's script that builds a `ModelServer` without an
`if __name__ == "__main__":` guard would be run again by multiprocessing's spawn), and the
pipe doubles as a lifeline — the supervisor keeps stdin open while it lives, so a child
whose supervisor was killed (SIGKILL leaves no chance to stop it) sees end-of-file and
stops itself: no orphan processes.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

from sheaf_core.spec import ModelSpec
from sheaf_server.settings import ServerSettings, SheafConfig

_LENGTH = struct.Struct("!Q")
#: The child's command line after the interpreter. Not `-m` this module: it would run as
#: `__main__`, and the role's classes unpickled from here would not be the ones it checks.
ENTRY = ("-c", "from sheaf_server.workers.child import main; main()")


@dataclass(frozen=True)
class ModelWorkerRole:
    """Serve `spec` on the Unix socket `socket_path`."""

    spec: ModelSpec
    settings: ServerSettings
    socket_path: str
    plugins: Sequence[object] = ()
    log_level: str = "info"
    #: Hot swaps the model has had: a worker restarted after one starts at that count.
    generation: int = 0

    @property
    def log_format(self) -> str:
        return self.settings.log_format


@dataclass(frozen=True)
class HttpWorkerRole:
    """Serve the config's HTTP API on `host:port` (SO_REUSEPORT beside the other HTTP
    workers), its models at `sockets`; touch `ready_file` once listening."""

    config: SheafConfig
    host: str
    port: int
    sockets: Mapping[str, Sequence[str]]
    ready_file: str
    index: int
    workers: int
    plugins: Sequence[object] = ()
    log_level: str = "info"

    @property
    def log_format(self) -> str:
        return self.config.server.log_format


Role = ModelWorkerRole | HttpWorkerRole


def write_role(stream: IO[bytes], role: Role) -> None:
    data = pickle.dumps(role, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read_role(stream: BinaryIO) -> Role:
    (size,) = _LENGTH.unpack(stream.read(_LENGTH.size))
    role: Role = pickle.loads(stream.read(size))
    return role


def _stop_when_orphaned(fd: int) -> None:
    """Block on stdin until the supervisor closes it or dies; then stop gracefully. (Raw
    reads: a daemon thread blocked in a buffered reader aborts the interpreter's exit.)"""
    def watch() -> None:
        while os.read(fd, 4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sheaf-lifeline", daemon=True).start()


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop uvicorn picks for the HTTP workers — uvloop when installed (its
    standard extra): shorter wake-ups per message than asyncio's own loop. (The app named
    here is never loaded: only the loop setting is read.)"""
    import uvicorn

    return uvicorn.Config("sheaf_server.asgi.app:create_app").get_loop_factory()


def main() -> None:
    stdin = sys.stdin.buffer
    role = _read_role(stdin)
    from sheaf_server.logs import configure_logging, silence_progress_bars
    from sheaf_server.telemetry import configure_tracing

    configure_logging(role.log_level, role.log_format)
    silence_progress_bars()
    configure_tracing()
    _stop_when_orphaned(stdin.fileno())
    if isinstance(role, ModelWorkerRole):
        from sheaf_server.workers.model_worker import serve

        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            runner.run(serve(role.spec, role.settings, role.plugins, role.socket_path,
                             role.generation))
    else:
        from sheaf_server.workers.http_worker import serve_http

        serve_http(role)

