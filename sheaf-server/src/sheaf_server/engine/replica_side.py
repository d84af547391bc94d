"""The model's side of a call that crossed from another process — a Ray model replica
(`ray.deployments`) or a model worker process of the multi-process tier 1
(`workers.model_worker`): each request path entry under the caller's trace, its outcome
returned as a value, so that a `RequestError` crosses the boundary intact (code, field
problems, request id) instead of as a transport's failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

from sheaf_core.contracts.base import BaseResponse
from sheaf_core.errors import RequestError
from sheaf_server.engine import request_path, tracing
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.runtime import ModelRuntime

#: What a replica's path answered: the encoded response, or its error.
Outcome = Answer | RequestError
#: What a replica's stream sends: ("accepted", request id) first, then stream items; a
#: `RequestError` (as a value) ends it.
Message = tuple[str, str] | RequestError


async def answer_each(runtime: Any, calls: Sequence[Call]) -> list[Outcome]:
    """Replica side of `handle_many`: each call through the request path, concurrently, so
    they batch together; outcomes as values, in order."""
    return list(await asyncio.gather(*(answer(runtime, call) for call in calls)))


async def answer(runtime: Any, call: Call) -> Outcome:
    """Replica side of `handle`: the request path's `predict`, as a value."""
    outcome: Outcome = await _as_value(runtime.name, call, runtime.handle(call))
    return outcome


async def validated(runtime: Any, call: Call) -> Call | RequestError:
    """Replica side of `validate`: the settled call, or the refusal, as a value."""
    outcome: Call | RequestError = await _as_value(runtime.name, call, runtime.validate(call))
    return outcome


async def answer_typed(runtime: ModelRuntime, call: Call) -> BaseResponse | RequestError:
    """Replica side of `respond` (a pipeline's model node): the typed response, as a
    value."""
    outcome: BaseResponse | RequestError = await _as_value(
        runtime.name, call, request_path.respond(runtime, call))
    return outcome


async def _as_value(name: str, call: Call, work: Awaitable[Any]) -> Any:
    """`work` under the caller's trace; a `RequestError` returned, not raised, so that it
    crosses the process boundary intact."""
    try:
        with tracing.continued(call.trace, "sheaf.replica", {"sheaf.model": name}):
            return await work
    except RequestError as exc:
        return exc


async def replica_stream(runtime: ModelRuntime, call: Call) -> AsyncIterator[Message]:
    """Replica side: the request path's stream, as messages. Its span (in the caller's
    trace) covers the acceptance: validation and queueing; the batch links to it."""
    try:
        with tracing.continued(call.trace, "sheaf.replica", {"sheaf.model": runtime.name}):
            request_id, stream = await request_path.stream(runtime, call)
    except RequestError as exc:
        yield exc
        return
    yield "accepted", request_id
    events = stream.events()
    try:
        async for item in events:
            yield item
    except RequestError as exc:
        yield exc
    finally:
        await events.aclose()
