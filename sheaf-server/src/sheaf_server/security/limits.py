"""Rate limits: a token bucket per caller and one per model (`server.rate_limits`), off by
default. A call takes one token from its caller's bucket and one from its model's, or from
neither: refused, it is a 429 whose Retry-After says when the emptier bucket has a token
again, with `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (IETF
draft-ietf-httpapi-ratelimit-headers). A caller is its API key's id, or its address when
the server has no keys. Each process keeps its own buckets: on Ray each ingress replica,
so the limits are approximate there (N replicas allow up to N times the rate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sheaf_server.engine.errors import RateLimited

#: Buckets kept before full (idle) ones are forgotten: callers by address are unbounded.
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Buckets of `burst` tokens refilled at `rate` per second, one per key."""

    def __init__(self, rate: float, burst: int, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.what = rate, burst, what
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0: it has one now)."""
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: str) -> None:
        self._refilled(key).tokens -= 1

    def remaining(self, key: str) -> int:
        return int(self._refilled(key).tokens)

    def _refilled(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def _forget_full(self, now: float) -> None:
        full = [key for key, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


class RateLimiter:
    """The per-caller and per-model buckets of one server process."""

    def __init__(self, per_caller: TokenBuckets | None, per_model: TokenBuckets | None) -> None:
        self.per_caller, self.per_model = per_caller, per_model

    def take(self, caller: str, model: str) -> None:
        """One token from both buckets, or `RateLimited` (and none taken)."""
        checks = [(b, k) for b, k in ((self.per_caller, caller), (self.per_model, model))
                  if b is not None]
        waits = [(bucket.wait(key), bucket, key) for bucket, key in checks]
        worst = max(waits, default=None, key=lambda item: item[0])
        if worst is not None and worst[0] > 0:
            seconds, bucket, key = worst
            raise RateLimited(f"{bucket.what} {key!r} is over its rate limit "
                              f"({bucket.rate:g} requests/s, burst {bucket.burst}); retry "
                              f"after {max(1, math.ceil(seconds))} s", retry_after=seconds,
                              limit=bucket.burst, remaining=bucket.remaining(key))
        for bucket, key in checks:
            bucket.take(key)
