"""Where the tracing tests find spans: the SDK's in-memory exporter for this process (tier
1 runs here), and a real OTLP/HTTP receiver on loopback for processes that export with the
standard OTEL_* variables (Ray replicas, a `sheaf-server` process). Both give `Span`s."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    attributes: dict[str, Any] = field(hash=False)
    error: bool
    service: str = ""


def from_sdk(span: ReadableSpan) -> Span:
    context = span.get_span_context()
    return Span(span.name, f"{context.trace_id:032x}", f"{context.span_id:016x}",
                f"{span.parent.span_id:016x}" if span.parent else None,
                tuple((f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}")
                      for link in span.links),
                dict(span.attributes or {}), span.status.status_code is StatusCode.ERROR,
                str(span.resource.attributes.get("service.name", "")))


_provider_lock = threading.Lock()
_exporter: InMemorySpanExporter | None = None


def in_memory_exporter() -> InMemorySpanExporter:
    """This process's tracer provider, exporting to memory (installed once: OpenTelemetry
    allows one global provider per process; later tests run traced, which costs them
    nothing but exercises the spans everywhere)."""
    global _exporter
    with _provider_lock:
        if _exporter is None:
            _exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(_exporter))
            trace.set_tracer_provider(provider)
        return _exporter


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint (protobuf, as the exporters send) on 127.0.0.1."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next((_value(a.value) for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Span(
                        span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex() or None,
                        tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        {a.key: _value(a.value) for a in span.attributes},
                        span.status.code == span.status.STATUS_CODE_ERROR, service))
        with self._lock:
            self.spans.extend(spans)

    def env(self, service: str = "sheaf-test") -> dict[str, str]:
        """The standard variables that make a process export its spans here."""
        return {"OTEL_TRACES_EXPORTER": "otlp_proto_http",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
                "OTEL_SERVICE_NAME": service, "OTEL_BSP_SCHEDULE_DELAY": "50"}

    def received(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()


def wait_for_spans(collect: Callable[[], list[Span]], done: Callable[[list[Span]], bool],
                   timeout: float = 30) -> list[Span]:
    """Spans arrive after the answers (batched exporters): poll until `done` says so."""
    deadline = time.monotonic() + timeout
    while True:
        spans = collect()
        if done(spans):
            return spans
        assert time.monotonic() < deadline, sorted(s.name for s in spans)
        time.sleep(0.05)


def ancestors(span: Span, spans: list[Span]) -> list[Span]:
    """The span's parents up its trace (as far as they were received)."""
    by_id = {s.span_id: s for s in spans if s.trace_id == span.trace_id}
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain
