"""Authentication at the edge: every HTTP request but the open paths (the probes, by
default) must carry a key the server knows — `Authorization: Bearer KEY` or `X-API-Key:
KEY` — else 401 with `WWW-Authenticate`. What the key may do is checked where a request
names what it calls (`Admission`): the one check for predict, stream, /invocations and
every later route family, on tier 1 and in Ray's ingress alike (both serve this app).

Pure ASGI, before the request-id middleware answers: a refusal carries the request id like
every other error body.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from sheaf_server.asgi.errors import error_response
from sheaf_server.asgi.metrics import path_matcher
from sheaf_server.asgi.request_id import STATE_KEY
from sheaf_server.engine.errors import Forbidden, Unauthorized
from sheaf_server.security.keys import KeyRing, Principal
from sheaf_server.security.limits import RateLimiter

#: Where the authenticated caller is kept for the request (`scope["state"]`).
PRINCIPAL_KEY = "principal"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyRing, open_paths: Collection[str]) -> None:
        self.app = app
        self.keys = keys
        self._open = path_matcher(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        principal = self.keys.identify(key) if key else None
        if principal is None:
            refusal = Unauthorized("this server needs an API key: send Authorization: "
                                   "Bearer KEY or X-API-Key: KEY" if not key else
                                   "the API key is not valid on this server")
            state = scope.setdefault("state", {})
            await error_response(refusal, state.get(STATE_KEY, ""))(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


def caller(scope: Scope) -> Principal | None:
    """The request's authenticated caller; None on a server without keys (or an open
    path)."""
    principal: Principal | None = scope.get("state", {}).get(PRINCIPAL_KEY)
    return principal


class Admission:
    """May this request call model (or pipeline) `name`, and may it now: its key's scopes,
    then the rate limits. Every route that calls a model passes here."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.limiter = limiter

    def admit(self, scope: Scope, name: str) -> None:
        principal = caller(scope)
        if principal is not None and not principal.may_call(name):
            raise Forbidden(f"API key {principal.id!r} may not call {name!r}; its scopes: "
                            f"{', '.join(sorted(principal.scopes))}")
        if self.limiter is not None:
            client = scope.get("client")
            who = principal.id if principal is not None else (client[0] if client else "?")
            self.limiter.take(who, name)

    @staticmethod
    def require_admin(scope: Scope, what: str) -> None:
        principal = caller(scope)
        if principal is not None and not principal.admin:
            raise Forbidden(f"{what} needs an API key with the 'admin' scope; key "
                            f"{principal.id!r} has {', '.join(sorted(principal.scopes))}")

    @staticmethod
    def visible(scope: Scope, name: str) -> bool:
        """Whether the model listing shows `name` to this caller."""
        principal = caller(scope)
        return principal is None or principal.admin or principal.may_call(name)
