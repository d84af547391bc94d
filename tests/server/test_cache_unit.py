"""The response cache, unit by unit, on a clock the test moves: what the key ignores (the
request id, the model name, the policy's excluded fields) and what it does not, requests
never cached (no seed), copies in and out, least-recently-used eviction, time to live, and
counters that survive a hot swap. The cache over HTTP, on both hosts, is test_cache.py."""

from __future__ import annotations

import pytest

from sheaf_core.builtin.baseline import BaselineForecaster
from sheaf_core.contracts.text_to_image import TextToImageRequest
from sheaf_core.contracts.time_series import TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.spec import CachePolicy
from sheaf_server.engine.cache import ResponseCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend() -> BaselineForecaster:
    return BaselineForecaster()


def forecast(horizon: int = 2, **fields: object) -> TimeSeriesRequest:
    return TimeSeriesRequest(history=[1.0, 2.0, 3.0], horizon=horizon, **fields)


def answer(value: float) -> TimeSeriesResponse:
    return TimeSeriesResponse(horizon=1, mean=[value])


def cache(clock: Clock | None = None, **policy: object) -> ResponseCache:
    return ResponseCache("unit", CachePolicy(enabled=True, **policy),
                         timer=clock or Clock())


def test_the_key_ignores_ids_and_excluded_fields_but_nothing_else(
        backend: BaselineForecaster) -> None:
    unit = cache(exclude_fields=["frequency"])
    key = unit.key(forecast(), backend)
    assert key is not None
    assert unit.key(forecast(request_id="other", model_name="elsewhere"), backend) == key
    assert unit.key(forecast(frequency="1h"), backend) == key  # excluded by the policy
    assert unit.key(forecast(horizon=3), backend) != key


def test_a_request_without_a_seed_is_never_cached(backend: BaselineForecaster) -> None:
    unit = cache()
    assert unit.key(TextToImageRequest(prompt="a heron"), backend) is None
    assert unit.key(TextToImageRequest(prompt="a heron", seed=7), backend) is not None
    assert unit.bypassed == 1


def test_what_goes_in_and_comes_out_are_copies(backend: BaselineForecaster) -> None:
    unit = cache()
    key = unit.key(forecast(), backend)
    assert key is not None and unit.get(key) is None
    stored = answer(1.0)
    unit.put(key, stored)
    stored.mean = [99.0]  # the caller goes on to stamp and encode its own object
    first = unit.get(key)
    assert first is not None and first.mean == [1.0]
    first.request_id = "mine"
    second = unit.get(key)
    assert second is not None and second.request_id is None
    assert (unit.hits, unit.misses) == (2, 1)


def test_the_least_recently_used_entry_goes_first(backend: BaselineForecaster) -> None:
    unit = cache(max_entries=2)
    keys = [unit.key(forecast(horizon=h), backend) for h in (1, 2, 3)]
    assert all(k is not None for k in keys)
    a, b, c = (k for k in keys if k is not None)
    unit.put(a, answer(1.0))
    unit.put(b, answer(2.0))
    assert unit.get(a) is not None  # a is now the most recently used
    unit.put(c, answer(3.0))  # evicts b
    assert unit.get(b) is None and unit.get(a) is not None and unit.get(c) is not None
    assert unit.summary()["entries"] == 2


def test_entries_expire_after_their_time_to_live(backend: BaselineForecaster) -> None:
    clock = Clock()
    unit = cache(clock, ttl_s=300)
    key = unit.key(forecast(), backend)
    assert key is not None
    unit.put(key, answer(1.0))
    clock.now = 299.9
    assert unit.get(key) is not None
    clock.now = 300.1
    assert unit.get(key) is None


def test_a_hot_swap_starts_empty_and_keeps_counting(backend: BaselineForecaster) -> None:
    old = cache()
    key = old.key(forecast(), backend)
    assert key is not None
    old.put(key, answer(1.0))
    old.get(key)
    new = ResponseCache("unit", CachePolicy(enabled=True), old)
    assert new.get(key) is None  # new weights, new answers
    assert (new.hits, new.misses) == (1, 1)
