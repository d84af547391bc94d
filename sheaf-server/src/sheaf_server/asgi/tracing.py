"""The request's span: OpenTelemetry's ASGI middleware (continues a caller's W3C
`traceparent`, records method, route and status), added only when tracing is on, so an
untraced server pays nothing for it. The engine's steps (`sheaf_server.engine.tracing`)
become its children.

Span names use route templates (`POST /{model}/predict`), never raw paths: a span name is
a grouping key in every tracing backend and must stay few.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.types import Scope

from sheaf_server.asgi.metrics import route_labels
from sheaf_server.engine import tracing


def add_tracing(app: FastAPI, models: Collection[str]) -> None:
    """Wrap `app` in the tracing middleware if this process records spans."""
    if not tracing.enabled():
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(OpenTelemetryMiddleware,
                       default_span_details=partial(span_details, models=frozenset(models)),
                       exclude_spans=["receive", "send"])  # one span per request, not per chunk


def route_template(path: str, models: Collection[str]) -> tuple[str | None, str]:
    """(route template or None for an unknown path, model name or "")."""
    model, route = route_labels(path, models)
    if route == "other":
        return None, ""
    if route == "describe":
        return "/models/{model}", model
    return (f"/{{model}}/{route}" if model else f"/{route}"), model


def span_details(scope: Scope, models: Collection[str]) -> tuple[str, dict[str, Any]]:
    method = scope.get("method", "HTTP")
    template, model = route_template(scope.get("path", ""), models)
    if template is None:
        return method, {}
    attributes: dict[str, Any] = {"http.route": template}
    if model:
        attributes["sheaf.model"] = model
    return f"{method} {template}", attributes
