"""GET /metrics: Prometheus series that move with the traffic, scraped from a live server on
both hosts (on Ray the batch, queue and cache series come from the model replicas)."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
from hosts import Host
from prometheus_client.parser import text_string_to_metric_families

from sheaf_core import ModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_the_traffic(host: Host) -> None:
    model = f"m{uuid.uuid4().hex[:8]}"  # series of earlier tests in this process stay apart
    spec = ModelSpec(name=model, backend="test", backend_kwargs={"delay_s": 0.05},
                     batching={"max_batch_size": 8, "max_wait_ms": 20},
                     cache={"enabled": True})
    with host.serve(spec) as client:
        before = scrape(client)
        bodies = [{**BODY, "history": [1.0, 2.0, 3.0, float(i)]} for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda b: client.post(f"/{model}/predict", json=b), bodies))
        assert all(r.status_code == 200 for r in replies)
        assert client.post(f"/{model}/predict", json=bodies[0]).status_code == 200  # a hit
        assert client.post(f"/{model}/predict", json={"horizon": 0}).status_code == 422
        assert client.post("/nope/predict", json=BODY).status_code == 404
        after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sheaf_requests_total", model=model, route="predict", status="200") == 9
    assert moved("sheaf_requests_total", model=model, route="predict", status="422") == 1
    assert moved("sheaf_requests_total", model="", route="other", status="404") == 1
    assert moved("sheaf_request_duration_seconds_count", model=model, route="predict") == 10
    assert moved("sheaf_queue_wait_seconds_count", model=model) == 8  # the hit never queued
    assert moved("sheaf_batch_size_sum", model=model) == 8
    assert 1 <= moved("sheaf_batch_size_count", model=model) < 8  # batches formed
    assert moved("sheaf_batch_duration_seconds_count", model=model) == \
        moved("sheaf_batch_size_count", model=model)
    assert value(after, "sheaf_queue_depth", model=model) == 0
    assert value(after, "sheaf_model_load_seconds", model=model) > 0
    assert moved("sheaf_cache_hits_total", model=model) == 1
    assert moved("sheaf_cache_misses_total", model=model) == 8
