"""OpenTelemetry traces, on both hosts: a request's span continues the caller's W3C
`traceparent`; its children are the steps of the request path (validate, cache, queue wait,
encode); the batch is one span linked to every request in it, and each request's queue
span links back to it. Tier 1 is read from the SDK's in-memory exporter; Ray's replicas and
the `sheaf-server` process export over OTLP/HTTP (configured by OTEL_* variables only) to a
receiver on loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cli_support import BIN, free_port, served
from hosts import Host
from tracing_support import (
    Span,
    ancestors,
    from_sdk,
    in_memory_exporter,
    otlp_receiver,
    wait_for_spans,
)

from sheaf_core import ModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def traceparent(trace_id: str, span_id: str = CALLER_SPAN) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


@contextmanager
def spans_of(host: Host, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Span]]]:
    """What the host's processes exported, as a callable to poll."""
    if host.name == "asgi":
        exporter = in_memory_exporter()
        exporter.clear()
        yield lambda: [from_sdk(span) for span in exporter.get_finished_spans()]
        return
    with otlp_receiver() as receiver:  # the replicas get these through their runtime_env
        for key, value in receiver.env().items():
            monkeypatch.setenv(key, value)
        yield receiver.received


STEPS = ("sheaf.validate", "sheaf.cache", "sheaf.queue", "sheaf.encode")


def in_trace(spans: list[Span], trace_id: str, name: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id and s.name == name]


def test_a_request_continues_the_callers_trace_with_a_span_per_step(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(name="m", backend="test", cache={"enabled": True},
                     batching={"max_batch_size": 3, "max_wait_ms": 500})
    others = ["1" * 32, "2" * 32]
    with spans_of(host, monkeypatch) as collect, host.serve(spec) as client:
        with ThreadPoolExecutor(3) as pool:  # three requests, three traces, one batch
            answers = list(pool.map(
                lambda t: client.post("/m/predict", json={**BODY, "horizon": t[1]},
                                      headers={**traceparent(t[0]), "x-request-id": t[0][:8]}),
                [(TRACE, 3), (others[0], 4), (others[1], 5)]))
        hit = client.post("/m/predict", json={**BODY, "horizon": 3},
                          headers=traceparent("3" * 32))
        bad = client.post("/m/predict", json={"horizon": 0}, headers=traceparent("4" * 32))
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert (hit.status_code, bad.status_code) == (200, 422)
        spans = wait_for_spans(collect, lambda spans: len(
            [s for s in spans if s.name == "sheaf.encode"]) >= 4 and any(
            s.name == "sheaf.batch" for s in spans) and in_trace(spans, "4" * 32,
                                                                   "sheaf.validate")
            # each process exports on its own: wait for every span asserted below
            and all(in_trace(spans, TRACE, step) for step in STEPS)
            and all(in_trace(spans, t, "sheaf.queue") for t in others)
            and in_trace(spans, "3" * 32, "sheaf.cache"))

    # The request's span continues the caller's: same trace, the caller's span as parent.
    [request] = [s for s in spans if s.trace_id == TRACE and s.parent_id == CALLER_SPAN]
    assert request.name == "POST /{model}/predict"
    assert request.attributes["http.route"] == "/{model}/predict"
    assert any(s.attributes.get("sheaf.request_id") == TRACE[:8]
               for s in spans if s.trace_id == TRACE)
    for step in STEPS:
        [span] = in_trace(spans, TRACE, step)
        assert request in ancestors(span, spans), step
    assert in_trace(spans, TRACE, "sheaf.cache")[0].attributes["sheaf.cache.hit"] is False

    # One batch span, linked to the three requests; each queue span links back to it.
    [batch] = [s for s in spans if s.name == "sheaf.batch"
               and TRACE in {trace_id for trace_id, _ in s.links}]
    assert {trace_id for trace_id, _ in batch.links} == {TRACE, *others}
    assert batch.attributes["sheaf.batch.size"] == 3 and batch.attributes["sheaf.model"] == "m"
    for trace_id in (TRACE, *others):
        [queue] = in_trace(spans, trace_id, "sheaf.queue")
        assert queue.links == ((batch.trace_id, batch.span_id),)

    # A cache hit: the cache span says so, and the request never queued.
    [lookup] = in_trace(spans, "3" * 32, "sheaf.cache")
    assert lookup.attributes["sheaf.cache.hit"] is True
    assert not in_trace(spans, "3" * 32, "sheaf.queue")
    # A 422: its validation span failed.
    [validation] = in_trace(spans, "4" * 32, "sheaf.validate")
    assert validation.error
    if host.name == "ray":  # the replicas were configured by the OTEL_* variables
        assert {s.service for s in spans} == {"sheaf-test"}
        assert in_trace(spans, TRACE, "sheaf.replica")


def test_sheaf_server_exports_spans_as_the_otel_variables_say(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n")
    with otlp_receiver() as receiver:
        env = {**os.environ, **receiver.env(service="forecasts")}
        with served(config, env=env) as server:
            response = httpx.post(f"{server.url}/forecaster/predict", json=BODY,
                                  headers=traceparent(TRACE))
            assert response.status_code == 200
            spans = wait_for_spans(receiver.received,
                                   lambda s: bool(in_trace(s, TRACE, "sheaf.encode")))
    [request] = [s for s in spans if s.trace_id == TRACE and s.parent_id == CALLER_SPAN]
    assert request.service == "forecasts" and request.name == "POST /{model}/predict"
    assert request.attributes["sheaf.model"] == "forecaster"


def test_an_exporter_that_is_not_installed_is_refused_at_start_naming_it(
        tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n")
    result = subprocess.run([str(BIN), "serve", str(config), "--port", str(free_port())],
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in result.stderr and "'zipkin'" in result.stderr
    assert "otlp_proto_http" in result.stderr  # what is installed
