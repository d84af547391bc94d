"""A middleware for Ray Serve's own HTTP servers (its proxy and direct-ingress replicas).

Ray wraps every ingress in its RequestIdMiddleware, which appends an X-Request-ID to each
response — after sheaf's app already set the id it answered under (which can be the body's
`request_id`). Clients would see the header twice, or two different ids. This layer sits
outside Ray's (Ray applies callback middlewares outermost) and keeps the first X-Request-ID
of a response: sheaf's.

Ray loads it from RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=sheaf_server.ray.http:middlewares,
which `sheaf_server.ray.options.cluster_env` sets for clusters and manifests sheaf builds.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sheaf_server.asgi.request_id import HEADER

CALLBACK_IMPORT_PATH = "sheaf_server.ray.http:middlewares"


def middlewares() -> list[Middleware]:
    """Ray's HTTP proxy callback: the middlewares to add to its HTTP servers."""
    return [Middleware(OneRequestIdHeader)]


class OneRequestIdHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_first_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _first_id_only(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_first_id)


def _first_id_only(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept, seen = [], False
    for key, value in headers:
        if key.lower() == HEADER:
            if seen:
                continue
            seen = True
        kept.append((key, value))
    return kept
