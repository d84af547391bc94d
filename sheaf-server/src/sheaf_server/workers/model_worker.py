"""A model worker process: one model, loaded once, served to every HTTP worker of the
server over a Unix socket — so its one batcher forms batches from all of their requests.

Messages in (`frames`): `(tag, kind, payload)` — `respond` (a typed `Call`: the request
path's `respond` here: prepare, cache, batch, backend), `validate` (a job's checks),
`stream` (the request path's stream), `describe`, `update` (hot swap to a spec), `cancel`
(the caller gave up on `tag`). Out: `(tag, ok, value)` — each outcome as a value
(`engine.replica_side`), a stream's messages one by one then `None`; and with tag 0 the
model's `WorkerState`, sent on connect and whenever it changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sheaf_core.spec import ModelSpec
from sheaf_server.engine import replica_side
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import BackendFailed
from sheaf_server.engine.local import Engine
from sheaf_server.engine.state import ModelState
from sheaf_server.settings import ServerSettings
from sheaf_server.workers.frames import FrameProtocol

log = logging.getLogger("sheaf.workers")

#: The tag of the model worker's own messages (its state), never a call's.
STATE_TAG = 0
#: How often the worker looks for a change of its model's state to announce.
STATE_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What a model worker tells every HTTP worker about its model: whether it serves (and
    why not), how many hot swaps it has had, the spec it serves, and its process id."""

    state: ModelState
    reason: str | None
    generation: int
    spec: ModelSpec
    pid: int


class ModelWorker:
    """Serves the one model of `engine` to the connections of HTTP workers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runtime = next(iter(engine.runtimes.values()))
        self.clients: set[FrameProtocol] = set()
        self._tasks: dict[tuple[FrameProtocol, int], asyncio.Task[None]] = {}
        self._announced: WorkerState | None = None

    def connection(self) -> FrameProtocol:
        """A protocol for one new connection (`loop.create_unix_server`'s factory)."""
        client: FrameProtocol

        def received(message: Any) -> None:
            self._received(client, message)

        def lost(_: Exception | None) -> None:
            self.clients.discard(client)
            for (owner, tag), task in list(self._tasks.items()):
                if owner is client:  # its HTTP worker is gone: nobody waits for these
                    task.cancel()
                    self._tasks.pop((owner, tag), None)

        def made() -> None:
            client.send((STATE_TAG, True, self.state()))

        client = FrameProtocol(received, lost, made, _unsendable)
        self.clients.add(client)
        return client

    def state(self) -> WorkerState:
        runtime = self.runtime
        return WorkerState(runtime.state, runtime.reason, runtime.generation, runtime.spec,
                           os.getpid())

    async def announce_changes(self) -> None:
        """Tell every connection when the model's state, reason or spec changes."""
        while True:
            current = self.state()
            if current != self._announced:
                self._announced = current
                for client in list(self.clients):
                    client.send((STATE_TAG, True, current))
            await asyncio.sleep(STATE_POLL_S)

    def _received(self, client: FrameProtocol, message: tuple[int, str, Any]) -> None:
        tag, kind, payload = message
        if kind == "cancel":
            task = self._tasks.pop((client, tag), None)
            if task is not None:
                task.cancel()
            return
        handler = self._handlers.get(kind)
        if handler is None:
            client.send((tag, False, RuntimeError(f"unknown message {kind!r}")))
            return
        task = asyncio.get_running_loop().create_task(self._reply(client, tag, handler,
                                                                  payload))
        key = (client, tag)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def _reply(self, client: FrameProtocol, tag: int,
                     handler: Callable[[ModelWorker, FrameProtocol, int, Any], Awaitable[Any]],
                     payload: Any) -> None:
        try:
            value = await handler(self, client, tag, payload)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # an update refused, a describe that failed: the caller's
            client.send((tag, False, exc))
            return
        client.send((tag, True, value))

    async def _respond(self, _: FrameProtocol, __: int, call: Call) -> Any:
        return await replica_side.answer_typed(self.runtime, call)

    async def _validate(self, _: FrameProtocol, __: int, call: Call) -> Any:
        return await replica_side.validated(self.runtime, call)

    async def _stream(self, client: FrameProtocol, tag: int, call: Call) -> None:
        """Each message of the request path's stream as it happens; `None` (the reply)
        ends it."""
        async for message in replica_side.replica_stream(self.runtime, call):
            client.send((tag, True, message))

    async def _describe(self, _: FrameProtocol, __: int, ___: None) -> dict[str, Any]:
        info = await self.runtime.describe()
        info["process"] = os.getpid()
        return info

    async def _update(self, _: FrameProtocol, __: int, spec: ModelSpec) -> None:
        await self.engine.update(spec)

    _handlers: dict[str, Callable[[ModelWorker, FrameProtocol, int, Any], Awaitable[Any]]] = {
        "respond": _respond, "validate": _validate, "stream": _stream,
        "describe": _describe, "update": _update}


def _unsendable(reply: tuple[int, bool, Any]) -> tuple[int, bool, Any]:
    """A reply that does not pickle (a backend's odd response) becomes a 500 for its caller
    rather than a hang."""
    return (reply[0], True, BackendFailed(
        "the model's answer could not be sent to the HTTP worker; the error is in the "
        "server log"))


async def serve(spec: ModelSpec, settings: ServerSettings, plugins: Sequence[object],
                socket_path: str, generation: int = 0) -> None:
    """Run until SIGTERM (or the supervisor's death, see `workers.child`): load the
    model, serve it on `socket_path`, then drain queued and running batches.
    `generation`: the hot swaps before this process started (it starts on the latest)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    engine = Engine([spec], settings, plugins=plugins)
    engine.runtimes[spec.name].generation = generation
    worker = ModelWorker(engine)
    await engine.start()
    if os.path.exists(socket_path):  # left by the process this one replaces
        os.unlink(socket_path)
    server = await loop.create_unix_server(worker.connection, path=socket_path)
    announcing = loop.create_task(worker.announce_changes())
    await stop.wait()
    log.info("model %r: draining", spec.name)
    server.close()  # no new connections; the open ones are answered until the engine stops
    await engine.stop()
    announcing.cancel()
    for client in list(worker.clients):
        client.close()

