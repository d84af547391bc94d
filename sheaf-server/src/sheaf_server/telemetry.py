"""Turn OpenTelemetry tracing on from the standard OTEL_* environment variables.

`OTEL_TRACES_EXPORTER` names the exporters (comma-separated: `console`, `otlp`,
`otlp_proto_http`, … — whatever is installed under OpenTelemetry's
`opentelemetry_traces_exporter` entry points); each exporter reads its own settings
(`OTEL_EXPORTER_OTLP_ENDPOINT`, …), the SDK reads the rest (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`). Unset or `none`: no
tracing, and the request path records nothing. Every sheaf process calls this at start:
`sheaf-server serve`, and each Ray replica (which gets the driver's OTEL_* variables).

A tracer provider the hosting application installed first is kept (e.g. by
`opentelemetry-instrument`, or a test's in-memory exporter).
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import trace

from sheaf_core.errors import ConfigError
from sheaf_server.engine import tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("sheaf.telemetry")

EXPORTER_GROUP = "opentelemetry_traces_exporter"
#: The service name spans carry when OTEL_SERVICE_NAME does not say.
DEFAULT_SERVICE_NAME = "sheaf-server"


def configure_tracing() -> bool:
    """Install a tracer provider exporting to OTEL_TRACES_EXPORTER's exporters, unless one
    is installed already. Returns whether spans are recorded. ConfigError names an exporter
    that is not installed (and those that are)."""
    if tracing.enabled():
        return True
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if name.strip() and name.strip() != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter(name) for name in names]
    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: exporting spans of %r to %s", service, ", ".join(names))
    return True


def _exporter(name: str) -> SpanExporter:
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        installed = sorted(ep.name for ep in entry_points(group=EXPORTER_GROUP))
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed (installed: "
            f"{', '.join(installed) or 'none'}); for OTLP, pip install "
            "opentelemetry-exporter-otlp-proto-http (name otlp_proto_http) or "
            "opentelemetry-exporter-otlp (name otlp)")
    return next(iter(found)).load()()
