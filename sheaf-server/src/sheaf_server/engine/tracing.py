"""OpenTelemetry spans of the request path, written once for every host.

A request's span (the HTTP server span of the ASGI app, or the span a Ray replica continues
from the ingress's trace context) gets children for each step: `sheaf.decode` (parse and
validate), `sheaf.features` (feature lookup), `sheaf.cache`, `sheaf.queue` (the wait for a
batch), `sheaf.encode`. A batch serves requests of many traces, so it is one `sheaf.batch`
span of its own with a link to every request in it, and each request's `sheaf.queue` span
links back to it (OpenTelemetry's guidance for batch processing).

With no tracer provider configured (the default) every call here costs a check of the
current span: nothing is recorded, nothing is allocated per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind

tracer = trace.get_tracer("sheaf")
T = TypeVar("T")


def enabled() -> bool:
    """Whether a tracer provider that records was installed in this process (by
    `sheaf_server.telemetry.configure_tracing`, or by the application hosting sheaf)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_parent() -> SpanContext | None:
    """The current span's context if it is recorded (a request being traced), else None:
    what a queued request keeps so that its batch can link to it."""
    span_context = trace.get_current_span().get_span_context()
    return span_context if span_context.is_valid and span_context.trace_flags.sampled else None


@contextmanager
def step(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A child span of the current request for one step of the path; nothing when the
    request is not traced. Yields the span (to add attributes) or None."""
    if current_parent() is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=_clean(attributes or {})) as span:
        yield span


def annotate(attributes: Mapping[str, Any]) -> None:
    """Attributes on the current request's span (e.g. the id it is answered under)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_clean(attributes))


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`), to send
    with a call to another process; empty when nothing is traced."""
    if current_parent() is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def continued(carrier: Mapping[str, str], name: str,
              attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Continue a caller's trace (W3C headers from `inject`) in this process: a span `name`
    under it, current for the block. Nothing when the caller was not traced."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER,
                                          attributes=_clean(attributes or {})):
            yield
    finally:
        otel_context.detach(token)


def traced_batch(model: str, parents: Sequence[tuple[SpanContext, int]], size: int,
                 run: Callable[[], T]) -> T:
    """Run a batch (in the worker thread) inside a `sheaf.batch` span linked to every
    traced request in it, and give each of those a `sheaf.queue` span from the time it was
    queued (wall-clock ns) to now, linked to the batch. `parents`: the traced requests'
    span contexts with their queue times; empty → just `run()`."""
    if not parents:
        return run()
    span = tracer.start_span(
        "sheaf.batch", context=otel_context.Context(),  # a root: it serves many traces
        links=[Link(parent) for parent, _ in parents],
        attributes={"sheaf.model": model, "sheaf.batch.size": size})
    started = time.time_ns()
    batch_link = [Link(span.get_span_context())]
    for parent, queued_ns in parents:
        tracer.start_span("sheaf.queue", context=trace.set_span_in_context(
            trace.NonRecordingSpan(parent)), start_time=queued_ns, links=batch_link,
            attributes={"sheaf.model": model}).end(end_time=started)
    with trace.use_span(span, end_on_exit=True, record_exception=True,
                        set_status_on_exception=True):
        return run()


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes without the None values (OpenTelemetry refuses them)."""
    return {key: value for key, value in attributes.items() if value is not None}
