"""A streamed prediction as server-sent events, readable by Sheaf's clients and by
sheaf-serve's.

Each event names its kind twice: as the SSE `event:` field (`progress`, `result`, `error`),
which Sheaf's clients read, and inside its JSON data as `"type"`, with `"done"`, which
sheaf-serve's stream readers read (they see only `data:` lines). Progress also carries
sheaf-serve's `total_steps` beside `total`. The result is the response exactly as `predict`
answers it, plus those two keys; an error is the error body, plus `status`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from sheaf_server.asgi.errors import error_body
from sheaf_server.engine import RequestError, status_of
from sheaf_server.engine.streaming import EventStream


async def server_sent_events(stream: EventStream,
                             request_id: str) -> AsyncIterator[ServerSentEvent]:
    """`stream`'s progress events, then its result — or an `error` event if it fails."""
    events = stream.events()
    try:
        async for kind, data in events:
            yield ServerSentEvent(_marked(kind, data), event=kind)
    except RequestError as exc:
        body = {"type": "error", "done": True, **error_body(exc, exc.request_id or request_id),
                "status": status_of(exc)}
        yield ServerSentEvent(json.dumps(body), event="error")
    finally:
        await events.aclose()


def _marked(kind: str, data: str) -> str:
    """The event's JSON object with `type` and `done` first (and, for progress,
    `total_steps`). A result is spliced, not re-encoded: it may be megabytes."""
    if kind == "progress":
        event = json.loads(data)
        return json.dumps({"type": kind, "done": False, "total_steps": event.get("total"),
                           **event})
    marks = json.dumps({"type": kind, "done": kind == "result"})
    rest = data.strip()[1:]
    return marks[:-1] + ("," + rest if rest.lstrip() != "}" else "}")
