"""The security layer of an app, from `server.auth`, `server.cors` and
`server.rate_limits`: built once by `create_app`, so tier 1 and Ray's ingress (which serves
the same app) enforce the same rules."""

from __future__ import annotations

import logging
from collections.abc import Collection

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from sheaf_core.errors import ConfigError
from sheaf_server.security.keys import KeyRing, load_keys
from sheaf_server.security.limits import RateLimiter, TokenBuckets
from sheaf_server.security.middleware import Admission, AuthMiddleware
from sheaf_server.settings import RateLimit, ServerSettings

log = logging.getLogger("sheaf.security")


def server_keys(settings: ServerSettings, served: Collection[str]) -> KeyRing | None:
    """The API keys, their scopes checked against what is served; ConfigError when
    `server.auth.required` and there are none."""
    auth = settings.auth
    keys = load_keys(auth.env_var, auth.keys_file)
    if keys is None:
        if auth.required:
            raise ConfigError(f"server.auth.required: no API keys; set ${auth.env_var} "
                              "(KEY:SCOPE|SCOPE, comma-separated) or server.auth.keys_file")
        return None
    keys.check_scopes(served)
    log.info("API keys required (%d: %s); open paths: %s", len(keys),
             ", ".join(p.id for p in keys.principals), ", ".join(auth.open_paths) or "none")
    return keys


def add_authentication(app: FastAPI, keys: KeyRing | None, settings: ServerSettings) -> None:
    """The key check (inside the request-id middleware: add it before that one)."""
    if keys is not None:
        app.add_middleware(AuthMiddleware, keys=keys, open_paths=settings.auth.open_paths)


def add_cors(app: FastAPI, settings: ServerSettings) -> None:
    """Starlette's CORS middleware when origins are allowed (add it outside the key check:
    a browser's preflight carries no key, and refusals need CORS headers to be readable)."""
    cors = settings.cors
    if cors.allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors.allow_origins,
                           allow_methods=cors.allow_methods, allow_headers=cors.allow_headers,
                           expose_headers=cors.expose_headers,
                           allow_credentials=cors.allow_credentials, max_age=cors.max_age)


def admission(settings: ServerSettings) -> Admission:
    limits = settings.rate_limits
    per_key, per_model = _buckets(limits.per_key, "caller"), _buckets(limits.per_model, "model")
    return Admission(RateLimiter(per_key, per_model) if per_key or per_model else None)


def _buckets(limit: RateLimit | None, what: str) -> TokenBuckets | None:
    return None if limit is None else TokenBuckets(limit.requests_per_s, limit.capacity, what)
