"""An HTTP worker's connection to one model worker process: calls multiplexed by tag over
one Unix socket, the model's state as the worker announces it, and a reconnect loop.

When the model worker dies (a segfault, the OOM killer), every call it held is answered at
once with 503 and Retry-After — never left hanging — the model reads as not ready (so
/ready says so), and the link reconnects as soon as the supervisor's replacement listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import pathlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from sheaf_core.errors import RequestError
from sheaf_server.engine import request_path
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import BackendFailed, ModelNotReady, past_deadline
from sheaf_server.engine.replica_side import Message
from sheaf_server.engine.state import ModelState
from sheaf_server.engine.streaming import StreamItem
from sheaf_server.workers.frames import FrameProtocol
from sheaf_server.workers.model_worker import STATE_TAG, WorkerState

log = logging.getLogger("sheaf.workers")

STARTING = "its worker process is starting"
RESTARTING = "its worker process stopped; the server is restarting it"
#: How long past a call's deadline the HTTP worker waits for a model worker that never
#: answered (the model worker answers 504 itself first).
DEADLINE_GRACE_S = 1.0
#: Seconds a client is told to wait when a model worker died under its request.
RETRY_AFTER_S = 1.0


class ModelLink:
    """Calls to one model worker. `on_change` is called when the worker's state changes
    (the `ProcessModel` folds its links' states into the model's)."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.on_change: Callable[[], None] = lambda: None
        self.state = ModelState.LOADING
        self.reason: str | None = STARTING
        self.announced: WorkerState | None = None
        #: Calls sent and not yet answered (a replica with fewer gets the next call).
        self.in_flight = 0
        self._protocol: FrameProtocol | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[Message | None]] = {}
        self._tags = itertools.count(1)
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        #: Connected once, or reported failed by the supervisor (see `wait_settled`).
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._protocol is not None:
            self._protocol.close()

    async def _keep_connected(self) -> None:
        """Connect, and connect again whenever the connection is lost (the worker restarts
        at the same path); tries every 50 ms, backing off to 0.5 s."""
        loop = asyncio.get_running_loop()
        pause = 0.05
        while True:
            try:
                _, protocol = await loop.create_unix_connection(
                    lambda: FrameProtocol(self._received, self._connection_lost), self.path)
            except OSError:
                self._read_exit_note()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            pause = 0.05
            self._lost.clear()
            self._protocol = protocol
            self._connected.set()
            self._settled.set()
            await self._lost.wait()

    async def wait_connected(self, timeout_s: float) -> None:
        """Until the worker process accepts this link's connection (a hot swap right after
        start, or while a worker restarts); TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def wait_settled(self, timeout_s: float) -> None:
        """Until the worker has accepted this link once, or the supervisor has reported
        it failed (it keeps dying at start: waiting longer would only delay the other
        models); TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._settled.wait()

    # -- incoming -------------------------------------------------------------------------

    def _received(self, message: tuple[int, bool, Any]) -> None:
        tag, ok, value = message
        if tag == STATE_TAG:
            self.announced = value
            self.state, self.reason = value.state, value.reason
            self.on_change()
            return
        queue = self._streams.get(tag)
        if queue is not None:
            queue.put_nowait(value if ok else _as_error(value))
            return
        future = self._pending.pop(tag, None)
        if future is not None and not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _read_exit_note(self) -> None:
        """While the worker cannot be reached: the supervisor's word on why, if it left one
        (`exit_note_path`) — restarting, or failed when it keeps dying at start."""
        try:
            note = json.loads(pathlib.Path(exit_note_path(self.path)).read_text())
        except (OSError, ValueError):
            return
        state = ModelState.FAILED if note.get("failed") else ModelState.LOADING
        if state is ModelState.FAILED:
            self._settled.set()
        if (state, note.get("reason")) != (self.state, self.reason):
            self.state, self.reason = state, str(note.get("reason"))
            self.on_change()

    def _connection_lost(self, _: Exception | None) -> None:
        self._protocol = None
        self._connected.clear()
        self.state, self.reason = ModelState.LOADING, RESTARTING
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(worker_lost(self.name))
        for queue in self._streams.values():
            queue.put_nowait(worker_lost(self.name))
        self._lost.set()
        self.on_change()

    # -- outgoing -------------------------------------------------------------------------

    def _send(self, kind: str, payload: Any) -> int:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            raise worker_lost(self.name)
        tag = next(self._tags)
        protocol.send((tag, kind, payload))
        return tag

    def _cancel(self, tag: int) -> None:
        if self._protocol is not None:
            self._protocol.send((tag, "cancel", None))

    async def call(self, kind: str, payload: Any, budget_s: float | None) -> Any:
        """One call and its reply (an outcome value: a response, or a `RequestError`);
        waits at most `budget_s` (+ grace), and cancels the call in the worker when the
        caller goes away."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        tag = self._send(kind, payload)
        self._pending[tag] = future
        self.in_flight += 1
        try:
            if budget_s is None:
                return await future
            async with asyncio.timeout(budget_s + DEADLINE_GRACE_S):
                return await future
        except TimeoutError:
            self._cancel(tag)
            raise past_deadline(f"model {self.name!r}") from None
        except asyncio.CancelledError:
            self._cancel(tag)
            raise
        finally:
            self.in_flight -= 1
            self._pending.pop(tag, None)

    async def stream(self, call: Call, budget_s: float) -> tuple[str, LinkStream]:
        """Open a streamed request: the worker's verdict first (its id, or the refusal)."""
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        tag = self._send("stream", call)
        self._streams[tag] = queue
        try:
            async with asyncio.timeout(budget_s + DEADLINE_GRACE_S):
                first = await queue.get()
        except BaseException:
            self._end_stream(tag, cancel=True)
            raise
        if isinstance(first, RequestError):
            self._end_stream(tag, cancel=False)
            raise first
        if first is None:  # cannot happen: a stream's first message is its verdict
            self._end_stream(tag, cancel=False)
            raise RuntimeError("the model worker ended a stream before accepting it")
        return first[1], LinkStream(self, tag, queue, first[1])

    def _end_stream(self, tag: int, cancel: bool) -> None:
        if self._streams.pop(tag, None) is not None and cancel:
            self._cancel(tag)


class LinkStream:
    """A streamed request accepted by a model worker, as the HTTP worker serves it."""

    def __init__(self, link: ModelLink, tag: int, queue: asyncio.Queue[Message | None],
                 request_id: str) -> None:
        self._link, self._tag, self._queue = link, tag, queue
        self.request_id = request_id

    async def events(self) -> AsyncGenerator[StreamItem, None]:
        ended = False
        try:
            while True:
                message = await self._queue.get()
                if message is None:
                    ended = True
                    return
                if isinstance(message, RequestError):
                    ended = True
                    raise request_path.stamp_error(message, self.request_id)
                kind, data = message
                yield kind, data
        finally:
            self._link._end_stream(self._tag, cancel=not ended)  # the caller went away


def exit_note_path(socket_path: str) -> str:
    """Where the supervisor says why the model worker at `socket_path` is down."""
    return socket_path + ".exit"


def worker_lost(name: str) -> ModelNotReady:
    """The refusal of a call whose model worker process stopped (503, Retry-After): one
    error per call, each stamped with its own request id on the way out."""
    return ModelNotReady(f"model {name!r}: {RESTARTING}; retry in a moment",
                         retry_after=RETRY_AFTER_S)


def _as_error(value: Any) -> RequestError:
    if isinstance(value, RequestError):
        return value
    log.error("a model worker's stream failed: %r", value)
    return BackendFailed("the model's worker failed while streaming; the error is in the "
                         "server log")
