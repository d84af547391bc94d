"""Streamed predictions: the same request path as `predict` — readiness, parsing, model
checks, the batcher's queue (its bound, its deadline, its worker slots) — with the backend's
`stream()` in place of `predict()`, and its progress events carried to the caller as they
happen.

A streamed request takes a batch of its own (`StreamJob.batch_alone`). Its events cross from
the worker thread to the event loop through `loop.call_soon_threadsafe`. When the caller goes
away (`Stream.events` is closed or cancelled) the job is marked cancelled: still queued, it
is dropped; running, the worker closes the backend's generator at its next event, and a
backend that yields once per step stops at the next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from sheaf_core.backend import Backend, ProgressEvent
from sheaf_core.contracts.base import BaseRequest, BaseResponse


class StreamCancelled(Exception):
    """The caller of a streamed request went away; the worker stopped the backend."""


@dataclass(eq=False)
class StreamJob:
    """A streamed request as the batcher holds it."""

    request: BaseRequest
    emit: Callable[[ProgressEvent], None]  # thread-safe
    cancelled: threading.Event = field(default_factory=threading.Event)
    batch_alone: ClassVar[bool] = True


def run_stream(backend: Backend[Any, Any], job: StreamJob) -> BaseResponse:
    """Worker-thread side: drive `backend.stream`, forwarding progress; the response."""
    events: Any = backend.stream(job.request)  # a generator: closed below
    try:
        for event in events:
            if job.cancelled.is_set():
                raise StreamCancelled("the caller went away")
            if isinstance(event, ProgressEvent):
                job.emit(event)
            elif isinstance(event, BaseResponse):
                return event
            else:
                raise TypeError(f"{type(backend).__name__}.stream yielded a "
                                f"{type(event).__name__}; expected ProgressEvent or the "
                                "response")
        raise RuntimeError(f"{type(backend).__name__}.stream ended without a response")
    finally:
        events.close()  # a backend's generator cleans up (e.g. stops its pipeline) here


#: A stream's items, ready for the wire: ("progress", event JSON) as they happen, then
#: ("result", the response JSON — what `predict` answers).
StreamItem = tuple[str, str]


class EventStream(Protocol):
    """What a host serves as server-sent events: a local `Stream`, or a replica's
    (`sheaf_server.ray.remote_stream.RemoteStream`)."""

    def events(self) -> AsyncGenerator[StreamItem, None]:
        """Progress, then the result; an `EngineError` if the request fails. Closing it
        early cancels the request."""
        ...


class Stream:
    """One accepted streamed request: iterate `events()`; closing it early cancels the job."""

    def __init__(self, job: StreamJob, queue: asyncio.Queue[ProgressEvent],
                 outcome: Callable[[], Awaitable[bytes]]) -> None:
        self.job = job
        self._queue = queue
        self._outcome = outcome

    async def events(self) -> AsyncGenerator[StreamItem, None]:
        result = asyncio.ensure_future(self._outcome())
        get: asyncio.Future[ProgressEvent] | None = None
        try:
            while True:
                get = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({get, result},
                                             return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield "progress", _progress(get.result())
                    continue
                get.cancel()
                while not self._queue.empty():  # progress that raced the result
                    yield "progress", _progress(self._queue.get_nowait())
                yield "result", result.result().decode()
                return
        finally:
            self.job.cancelled.set()
            result.cancel()
            if get is not None:
                get.cancel()


def _progress(event: ProgressEvent) -> str:
    return event.model_dump_json(exclude_none=True)


def open_stream(request: BaseRequest, loop: asyncio.AbstractEventLoop) -> tuple[
        StreamJob, asyncio.Queue[ProgressEvent]]:
    """A job for `request` whose events land in the returned queue (on `loop`)."""
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    def emit(event: ProgressEvent) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    job = StreamJob(request, emit)
    return job, queue
