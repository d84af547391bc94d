"""Streamed requests on Ray: the ingress opens a streaming call to a model replica, which
runs the engine's `ModelRuntime.stream` — the same path as tier 1 — and sends its events
back as they happen.

The replica's first message says whether the request was accepted (its request id) or
refused (the `EngineError`: not ready, a 422, overload), so the ingress answers a refusal with
a plain status before any event, as tier 1 does. Closing the ingress's stream (a client that
disconnects) cancels the call; Ray cancels the replica's generator, which cancels the job.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from sheaf_server.engine import tracing
from sheaf_server.engine.errors import EngineError
from sheaf_server.engine.model import ModelRuntime
from sheaf_server.engine.streaming import StreamItem
from sheaf_server.ray.remote_calls import CallMeta, guarded

#: What a replica's stream sends: ("accepted", request id) first, then stream items; an
#: `EngineError` (as a value) ends it.
Message = tuple[str, str] | EngineError


async def replica_stream(runtime: ModelRuntime, body: bytes | str, request_id: str,
                         body_id_wins: bool, timeout_s: float | None,
                         meta: CallMeta) -> AsyncIterator[Message]:
    """Replica side: the engine's stream, as messages. Its span (in the caller's trace)
    covers the acceptance: validation and queueing; the batch links to it."""
    try:
        with tracing.continued(meta.trace, "sheaf.replica", {"sheaf.model": runtime.name}):
            request_id, stream = await runtime.stream(
                body, request_id, body_id_wins=body_id_wins, timeout_s=timeout_s,
                media_type=meta.media_type)
    except EngineError as exc:
        yield exc
        return
    yield "accepted", request_id
    events = stream.events()
    try:
        async for item in events:
            yield item
    except EngineError as exc:
        yield exc
    finally:
        await events.aclose()


async def open_remote_stream(handle: DeploymentHandle, name: str, body: bytes | str,
                             request_id: str, budget: float,
                             meta: CallMeta) -> tuple[str, RemoteStream]:
    """Ingress side: start the replica's stream and wait for its verdict on the request."""
    calls = cast(DeploymentResponseGenerator, handle.options(stream=True).stream.remote(
        body, request_id, True, budget, meta))
    try:
        first: Message = await guarded(name, budget, f"request id {request_id}",
                                        calls.__anext__())
    except BaseException:
        calls.cancel()
        raise
    if isinstance(first, EngineError):
        raise first
    return first[1], RemoteStream(calls, first[1])


class RemoteStream:
    """A replica's accepted stream, as the ingress serves it."""

    def __init__(self, calls: DeploymentResponseGenerator, request_id: str) -> None:
        self._calls = calls
        self.request_id = request_id

    async def events(self) -> AsyncGenerator[StreamItem, None]:
        try:
            async for message in self._calls:
                if isinstance(message, EngineError):
                    message.request_id = message.request_id or self.request_id
                    raise message
                yield _item(message)
        finally:
            self._calls.cancel()  # a no-op once the replica's stream has ended


def _item(message: Any) -> StreamItem:
    kind, data = message
    return str(kind), str(data)
