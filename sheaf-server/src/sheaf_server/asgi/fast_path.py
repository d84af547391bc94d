"""Hand the hottest routes (POST /{name}/predict, /invocations) straight to their handler.

Why: on a small model, FastAPI's per-request machinery — route matching over every route,
dependency solving, the exception and exit-stack wrappers — cost more than parsing, batching
and the backend together (py-spy, bench/results/serve_overhead.md). The routes stay
registered with FastAPI, so OpenAPI documents them and any request this layer does not take
(another method, another path, the app mounted under a prefix) gets FastAPI's normal answer
through the same handler. The handler is the same
function the FastAPI route calls; errors map through the same `error_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sheaf_server.asgi.errors import error_response
from sheaf_server.asgi.request_id import STATE_KEY
from sheaf_server.engine import EngineError, RequestError

log = logging.getLogger("sheaf.server")

Handler = Callable[[Request], Awaitable[Response]]


class FastPathMiddleware:
    """Dispatch `POST path` for the paths in `handlers` straight to the handler."""

    def __init__(self, app: ASGIApp, handlers: Mapping[str, Handler]) -> None:
        self.app = app
        self.handlers = dict(handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self.handlers.get(scope["path"])
                   if scope["type"] == "http" and scope["method"] == "POST" else None)
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            response = render_error(exc, scope)
        await response(scope, receive, send)


def render_error(exc: Exception, scope: Scope) -> Response:
    """A `RequestError` as its status and body; anything else as a logged, opaque 500."""
    state = scope.setdefault("state", {})
    if isinstance(exc, RequestError) and exc.request_id:
        state[STATE_KEY] = exc.request_id  # the X-Request-ID header follows the body
    request_id = state.get(STATE_KEY, "")
    if not isinstance(exc, RequestError):
        log.error("unhandled error (request id %s)", request_id, exc_info=exc)
        exc = EngineError("internal server error; the request id finds the error in the "
                          "server log")
    return error_response(exc, request_id)
