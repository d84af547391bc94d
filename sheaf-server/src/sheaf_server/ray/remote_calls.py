"""Calls from one Ray replica to another, with Ray's failures — back-pressure, a replica
that never answers or died — turned into the engine's errors. Outcomes come back as values
(`Outcome`): a response, or the `EngineError` the replica's engine produced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_server.engine import tracing
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.errors import BackendFailed, DeadlineExceeded, EngineError, Overloaded

log = logging.getLogger("sheaf.ray")

#: What a replica's engine answered: the encoded response, or its error.
Outcome = Answer | EngineError


@dataclass(frozen=True, slots=True)
class CallMeta:
    """What travels with a body to a replica besides its id and deadline: the body's media
    type (the replica decodes it) and the caller's trace context as W3C headers (the
    replica's spans continue the request's trace; empty when it is not traced)."""

    media_type: str = JSON_MEDIA_TYPE
    trace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def here(cls, media_type: str = JSON_MEDIA_TYPE) -> CallMeta:
        """For a call made now: with the current trace context."""
        return cls(media_type, tracing.inject())


#: One request of a coalesced call: (body, request id, body id wins, seconds left, meta).
CallItem = tuple[bytes | str, str, bool, float, CallMeta]
#: How long past the model's own deadline the caller waits before giving up on a replica
#: that never answered (the replica normally answers 504 itself first).
DEADLINE_GRACE_S = 1.0


async def call_replica(handle: DeploymentHandle, name: str, body: bytes | str,
                       request_id: str, body_id_wins: bool, budget: float,
                       meta: CallMeta) -> Outcome:
    """`handle(...)` on a replica of model (or pipeline) `name`."""
    outcome: Outcome = await guarded(
        name, budget, f"request id {request_id}",
        handle.handle.remote(body, request_id, body_id_wins, budget, meta))
    return outcome


async def call_replica_many(handle: DeploymentHandle, name: str,
                            items: Sequence[CallItem]) -> list[Outcome]:
    """`handle_many(items)` on one replica: several requests in one call (see
    `sheaf_server.ray.coalesce`); one outcome per item, in order."""
    outcomes: list[Outcome] = await guarded(
        name, max(item[3] for item in items), f"{len(items)} requests",
        handle.handle_many.remote(list(items)))
    return outcomes


async def guarded(name: str, budget: float, what: str, response: Awaitable[Any]) -> Any:
    """Await a replica's answer; Ray's failures become the engine's errors."""
    try:
        async with asyncio.timeout(budget + DEADLINE_GRACE_S):
            return await response
    except TimeoutError:
        raise DeadlineExceeded(f"no answer from model {name!r} within the request "
                               "deadline") from None
    except BackPressureError as exc:
        raise Overloaded(f"model {name!r}: every replica is busy and its queue is "
                         f"full ({exc.args[1] if len(exc.args) > 1 else '?'} calls); "
                         "retry later", retry_after=1) from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("calling a replica of model %r failed (%s)", name, what, exc_info=exc)
        raise BackendFailed(f"model {name!r} could not be reached; the error is in the "
                            "server log under this request id") from None
