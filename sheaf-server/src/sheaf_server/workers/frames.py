"""Messages between a server's processes: pickled Python values in length-prefixed frames
over a Unix socket, read and written by one asyncio protocol.

Why this transport: measured against multiprocessing queues and pipes and ZeroMQ for a
pickled `Call` out and its answer back (bench/ipc_transport.py, docs/benchmarks.md),
asyncio Unix sockets had the shortest round trip (82 µs p50 vs 141 to 185 µs), are awaited on
the event loop the HTTP worker already runs (no thread per queue) and need no dependency.
The protocol parses frames straight from the socket's buffer — `StreamReader.readexactly`
costs a coroutine and a future per frame — and coalesces: the values sent in one turn of
the event loop travel as one frame (one pickle, one write, one wake-up of the reader), which
under load is dozens of calls at once (a batch's answers, the requests that follow them).

Only processes of one server talk this way (the socket lives in a directory only the
server's user can enter): pickle is safe between them, and it carries typed requests,
responses and `RequestError`s as they are.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sheaf.workers")

_HEADER = struct.Struct("!I")
#: A frame larger than this is refused: a corrupt length would otherwise grow the buffer
#: without end. Generous — an image's response is a few MiB.
MAX_FRAME_BYTES = 1 << 30


class FrameProtocol(asyncio.Protocol):
    """One connection: `send` a value; each value received goes to `on_message`;
    `on_made` is called once it can send, `on_lost` once when it ends (with the error, if
    any)."""

    def __init__(self, on_message: Callable[[Any], None],
                 on_lost: Callable[[Exception | None], None] | None = None,
                 on_made: Callable[[], None] | None = None,
                 on_unpicklable: Callable[[Any], Any] | None = None) -> None:
        self.on_message = on_message
        self.on_unpicklable = on_unpicklable
        self.on_lost = on_lost
        self.on_made = on_made
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outbox: list[Any] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                self.close()
                return
            if end - start - _HEADER.size < size:
                break
            begin = start + _HEADER.size
            messages = pickle.loads(memoryview(buffer)[begin:begin + size])
            start = begin + size
            for message in messages:
                self.on_message(message)
        if start:
            del buffer[:start]

    def send(self, message: Any) -> None:
        """Send one value, with the others sent in this turn of the loop; silently nothing
        once the connection is closed (the reader's `on_lost` tells the waiting side).
        A value that does not pickle is replaced by what `on_unpicklable` makes of it
        (by default it is dropped, and logged)."""
        if self.closed or self.transport is None:
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self.closed or self.transport is None or not messages:
            return
        try:
            data = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            data = pickle.dumps(self._picklable(messages), protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_HEADER.pack(len(data)) + data)

    def _picklable(self, messages: list[Any]) -> list[Any]:
        kept = []
        for message in messages:
            try:
                pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                kept.append(message)
            except Exception as exc:
                log.error("a message could not be sent between processes: %s", exc)
                if self.on_unpicklable is not None:
                    kept.append(self.on_unpicklable(message))
        return kept

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(exc)
