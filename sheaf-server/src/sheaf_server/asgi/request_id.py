"""X-Request-ID on every response: the caller's id when sane, else a generated one.

Pure ASGI (no BaseHTTPMiddleware) to keep the per-request cost to a dict lookup. Handlers
may replace the id (a body's `request_id` when no header came) through `scope["state"]`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
STATE_KEY = "request_id"
GENERATED_KEY = "request_id_generated"


def get_request_id(scope: Scope) -> str:
    return scope["state"][STATE_KEY]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == HEADER:
                incoming = value
                break
        state: dict[str, Any] = scope.setdefault("state", {})
        if incoming is not None and _SANE.match(incoming):
            state[STATE_KEY], state[GENERATED_KEY] = incoming.decode(), False
        else:
            state[STATE_KEY], state[GENERATED_KEY] = uuid.uuid4().hex, True

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((HEADER, state[STATE_KEY].encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
