"""Counts and times every HTTP request for Prometheus (`sheaf_requests_total`,
`sheaf_request_duration_seconds`), labelled by model and route — and, when
`server.access_log` is on, logs it (`sheaf.access`) with the same measurement.

A pure ASGI middleware, so the fast path and streams are measured too (a stream until its
last event). Labels come only from the served models and the known routes: a request for
an unknown model or path is counted as route "other", so nobody can grow the series.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sheaf_server.asgi.request_id import STATE_KEY
from sheaf_server.asgi.routes import MODEL_ROUTES, SERVER_ROUTES
from sheaf_server.engine.metrics import REQUEST_SECONDS, REQUESTS


def route_labels(path: str, models: Collection[str]) -> tuple[str, str]:
    """(model, route) of a request path; model "" for the server's own routes."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] in models and parts[1] in MODEL_ROUTES:
        return parts[0], parts[1]
    if len(parts) == 2 and parts[0] == "models" and parts[1] in models:
        return parts[1], "describe"
    if len(parts) == 1 and parts[0] in SERVER_ROUTES:
        return "", parts[0]
    return "", "other"


ACCESS = logging.getLogger("sheaf.access")


def _log_access(scope: Scope, model: str, route: str, status: int, elapsed: float) -> None:
    latency_ms = round(elapsed * 1000, 2)
    request_id = scope.get("state", {}).get(STATE_KEY)
    ACCESS.info("%s %s %d %.2f ms (request id %s)", scope["method"], scope["path"], status,
                latency_ms, request_id, extra={
                    "request_id": request_id, "model": model or None, "route": route,
                    "method": scope["method"], "path": scope["path"], "status": status,
                    "latency_ms": latency_ms})


def path_matcher(patterns: Collection[str]) -> Callable[[str], bool]:
    """Whether a path matches one of the shell-style `patterns` (`*` stays within one
    path segment, so `/*/ready` is a model's readiness, not every path ending in ready)."""
    if not patterns:
        return lambda path: False
    parts = ("".join("[^/]*" if c == "*" else re.escape(c) for c in p) for p in patterns)
    compiled = re.compile("|".join(f"(?:{part})" for part in parts))
    return lambda path: compiled.fullmatch(path) is not None


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, models: Collection[str], access_log: bool = False,
                 access_log_exclude: Collection[str] = ()) -> None:
        self.app = app
        self.models = frozenset(models)
        self.access_log = access_log
        self._unlogged = path_matcher(access_log_exclude)
        # Bound series by label values (few: served models x routes x statuses), so the
        # hot path skips prometheus-client's locked label lookup.
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._seconds: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        model, route = route_labels(scope["path"], self.models)
        started = time.perf_counter()
        status = 500  # what a client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            key = (model, route, str(status))
            counter = self._counts.get(key)
            if counter is None:
                counter = self._counts[key] = REQUESTS.labels(*key)
            counter.inc()
            histogram = self._seconds.get(key[:2])
            if histogram is None:
                histogram = self._seconds[key[:2]] = REQUEST_SECONDS.labels(model, route)
            histogram.observe(elapsed)
            if self.access_log and not self._unlogged(scope["path"]):
                _log_access(scope, model, route, status, elapsed)
