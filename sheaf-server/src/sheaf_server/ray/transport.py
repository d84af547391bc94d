"""Ray as a transport: how a `Call` reaches the replica that runs the request path
(`engine.request_path`, the very code tier 1 runs), and how its outcome comes back. The one
module that calls deployment handles.

- Outcomes come back as values — an `Answer`, a typed response (a pipeline's model node:
  typed objects both ways, no JSON between two Python ends), or the `RequestError` the
  replica's path produced — so an error crosses the process boundary intact (code, field
  problems, request id).
- Ray's own failures are mapped once (`guarded`): a full replica queue (back-pressure) is the
  engine's overload (503 + Retry-After), no answer by the deadline its 504, a replica that
  died or cannot be reached a 500 whose details are in the log.
- Calls for one model that reach the ingress together travel in one handle call
  (`Coalescer`): each handle call costs a round of routing, gRPC and task scheduling on both
  sides, and at dozens of concurrent clients that, not the model, bounded throughput.
- Streams: the replica's first message says whether the request was accepted (its id) or
  refused (the error), so the ingress answers a refusal with a plain status before any
  event, as tier 1 does; closing the ingress's stream cancels the call, and Ray cancels the
  replica's generator, which cancels the job.

Replica side: `ModelReplica`/`PipelineReplica` (`ray.deployments`) expose `handle`,
`handle_many`, `respond` and `stream`, each one entry into the request path with its
outcome as a value (`engine.replica_side`, shared with tier 1's model worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Any, cast

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from sheaf_core.contracts.base import BaseResponse
from sheaf_core.errors import RequestError
from sheaf_server.engine import request_path
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import BackendFailed, overloaded, past_deadline
from sheaf_server.engine.replica_side import Message, Outcome
from sheaf_server.engine.streaming import StreamItem

log = logging.getLogger("sheaf.ray")

#: How long past the call's own deadline the caller waits before giving up on a replica
#: that never answered (the replica normally answers 504 itself first).
DEADLINE_GRACE_S = 1.0


async def guarded(name: str, budget: float, what: str, response: Awaitable[Any]) -> Any:
    """Await a replica's answer; Ray's failures become the engine's errors."""
    try:
        async with asyncio.timeout(budget + DEADLINE_GRACE_S):
            return await response
    except TimeoutError:
        raise past_deadline(f"model {name!r}") from None
    except BackPressureError as exc:
        queued = exc.args[1] if len(exc.args) > 1 else "?"
        raise overloaded(f"model {name!r}", f"every replica is busy and its queue holds "
                         f"{queued} calls: max_queued_requests", 1) from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("calling a replica of model %r failed (%s)", name, what, exc_info=exc)
        raise BackendFailed(f"model {name!r} could not be reached; the error is in the "
                            "server log under this request id") from None


# -- predictions ----------------------------------------------------------------------------

async def call_replica(handle: DeploymentHandle, call: Call, budget: float) -> Outcome:
    """`handle(call)` on a replica of the call's model (or pipeline)."""
    outcome: Outcome = await guarded(call.model, budget, f"request id {call.request_id}",
                                     handle.handle.remote(call.leaving(budget)))
    return outcome


async def respond(handle: DeploymentHandle, call: Call) -> BaseResponse:
    """A pipeline's model node on Ray: the typed call to a replica of its model, which
    enters `request_path.respond`; the typed response back (pickled, not JSON)."""
    budget = call.budget_s or 0.0
    result: BaseResponse | RequestError = await guarded(
        call.model, budget, f"request id {call.request_id}",
        handle.respond.remote(call.leaving()))
    if isinstance(result, RequestError):
        raise result
    return result


async def validate(handle: DeploymentHandle, call: Call, budget: float) -> Call:
    """`validate(call)` on a replica: the request path's checks there (the model's limits
    and its backend's checks live with the model); the call under its settled id back."""
    outcome: Call | RequestError = await guarded(
        call.model, budget, f"request id {call.request_id}",
        handle.validate.remote(call.leaving(budget)))
    if isinstance(outcome, RequestError):
        raise outcome
    return outcome


@dataclass(eq=False, slots=True)
class _Pending:
    call: Call
    budget: float
    future: asyncio.Future[Outcome]


class Coalescer:
    """Sends the calls for one model that arrived within one turn of the event loop as a
    single `handle_many` call — it never waits for more — and the model replica runs each
    through the request path, where they batch as usual. A lone call goes as a plain
    `handle` call, so cancelling it (a client that disconnects) still reaches the replica
    and drops it before it runs; an item of a shared call is only abandoned at the ingress
    (the replica may still compute it)."""

    def __init__(self, handle: DeploymentHandle, name: str) -> None:
        self.handle = handle
        self.name = name
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: calls sent, and requests they carried (GET /models/NAME → ingress)
        self.calls = 0
        self.items = 0

    async def call(self, call: Call, budget: float) -> Outcome:
        loop = asyncio.get_running_loop()
        pending = _Pending(call.leaving(budget), budget, loop.create_future())
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(pending)
        return await pending.future

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        items = [item for item in items if not item.future.done()]
        if not items:
            return
        self.calls += 1
        self.items += len(items)
        task = asyncio.get_running_loop().create_task(self._send(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def abandoned(_: asyncio.Future[Outcome]) -> None:
            if all(item.future.done() for item in items) and not task.done():
                task.cancel()  # Ray cancels the call in the replica too

        for item in items:
            item.future.add_done_callback(abandoned)

    async def _send(self, items: list[_Pending]) -> None:
        try:
            if len(items) == 1:
                outcomes: list[Outcome] = [await guarded(
                    self.name, items[0].budget, f"request id {items[0].call.request_id}",
                    self.handle.handle.remote(items[0].call))]
            else:
                outcomes = await guarded(
                    self.name, max(item.budget for item in items), f"{len(items)} requests",
                    self.handle.handle_many.remote([item.call for item in items]))
        except (RequestError, asyncio.CancelledError) as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc if isinstance(exc, RequestError)
                                              else asyncio.CancelledError())
            return
        for item, outcome in zip(items, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


# -- streams --------------------------------------------------------------------------------

async def open_stream(handle: DeploymentHandle, call: Call,
                      budget: float) -> tuple[str, RemoteStream]:
    """Ingress side: start the replica's stream and wait for its verdict on the request."""
    calls = cast(DeploymentResponseGenerator, handle.options(stream=True).stream.remote(
        call.leaving(budget)))
    try:
        first: Message = await guarded(call.model, budget, f"request id {call.request_id}",
                                       calls.__anext__())
    except BaseException:
        calls.cancel()
        raise
    if isinstance(first, RequestError):
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
                if isinstance(message, RequestError):
                    raise request_path.stamp_error(message, self.request_id)
                kind, data = message
                yield str(kind), str(data)
        finally:
            self._calls.cancel()  # a no-op once the replica's stream has ended
