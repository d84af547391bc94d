"""The per-model response cache, on both hosts: an identical request within the TTL is
answered from memory under its own request id without reaching the batcher; what is not
deterministic is never cached; an update starts an empty cache."""

from __future__ import annotations

import time
from typing import Any

import httpx
from hosts import Host

from sheaf_core import ModelSpec
from sheaf_core.contracts.image_to_image import ImageToImageRequest
from sheaf_core.contracts.text_to_image import TextToImageRequest

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}


def cached(ttl_s: float = 300, exclude_fields: tuple[str, ...] = (),
           **backend_kwargs: Any) -> ModelSpec:
    return ModelSpec(name="m", backend="test", backend_kwargs=backend_kwargs,
                     cache={"enabled": True, "ttl_s": ttl_s,
                            "exclude_fields": list(exclude_fields)})


def described(client: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """(batcher stats, cache counters) of model m."""
    info = client.get("/models/m").json()
    return info["stats"], info["cache"]


def test_an_identical_request_is_answered_from_the_cache_under_its_own_id(
        host: Host) -> None:
    with host.serve(cached(exclude_fields=("num_samples",))) as client:
        first = client.post("/m/predict", json=BODY, headers={"x-request-id": "one"})
        second = client.post("/m/predict", json={**BODY, "num_samples": 7},
                             headers={"x-request-id": "two"})
        other = client.post("/m/predict", json={**BODY, "horizon": 2})
        stats, cache = described(client)
    assert first.status_code == second.status_code == other.status_code == 200
    assert second.json()["request_id"] == "two" and second.headers["x-request-id"] == "two"
    assert {k: v for k, v in second.json().items() if k != "request_id"} == \
        {k: v for k, v in first.json().items() if k != "request_id"}
    assert stats["requests"] == 2  # the hit never reached the batcher
    assert (cache["hits"], cache["misses"], cache["entries"]) == (1, 2, 2)


def test_an_entry_expires_after_its_ttl(host: Host) -> None:
    with host.serve(cached(ttl_s=0.3)) as client:
        client.post("/m/predict", json=BODY)
        client.post("/m/predict", json=BODY)
        time.sleep(0.5)  # past the TTL
        client.post("/m/predict", json=BODY)
        stats, cache = described(client)
    assert stats["requests"] == 2 and (cache["hits"], cache["misses"]) == (1, 2)


def test_answers_that_are_not_deterministic_are_never_cached(host: Host) -> None:
    with host.serve(cached(deterministic=False)) as client:
        for _ in range(3):
            assert client.post("/m/predict", json=BODY).status_code == 200
        stats, cache = described(client)
    assert stats["requests"] == 3
    assert (cache["hits"], cache["entries"], cache["bypassed"]) == (0, 0, 3)


def test_a_model_without_a_cache_reports_none(host: Host) -> None:
    with host.serve(ModelSpec(name="m", backend="test")) as client:
        client.post("/m/predict", json=BODY)
        client.post("/m/predict", json=BODY)
        stats, cache = described(client)
    assert cache is None and stats["requests"] == 2


def test_an_update_starts_an_empty_cache(host: Host) -> None:
    v1 = cached()
    v2 = v1.model_copy(update={"backend_kwargs": {"bias": 100.0}})
    with host.serve(v1) as client:
        before = client.post("/m/predict", json=BODY).json()["mean"]
        assert host.server is not None
        host.server.update(v2)
        for _ in range(200):  # Ray applies the update replica by replica: bounded wait
            after = client.post("/m/predict", json=BODY).json()["mean"]
            if after != before:
                break
            time.sleep(0.05)
    assert after == [value + 100.0 for value in before]


def test_image_requests_without_a_seed_are_not_deterministic() -> None:
    assert not TextToImageRequest(prompt="a heron").deterministic()
    assert TextToImageRequest(prompt="a heron", seed=3).deterministic()
    assert not ImageToImageRequest.model_construct(seed=None).deterministic()
    assert ImageToImageRequest.model_construct(seed=3).deterministic()
