"""The per-model response cache: identical requests within a TTL answered from memory.

Keyed by the canonical request — its JSON without `request_id`, `model_name` and the
policy's excluded fields — so a hit is exactly a request the backend already answered. A
request the backend cannot answer the same way twice (`Backend.deterministic`: an image
without a seed, a sampling forecaster) is never stored or served from here. Least recently
used entries go first once `max_entries` are held (cachetools' TTLCache).

Lives in the model's runtime: on Ray each replica has its own. A hot swap starts an empty
cache (new weights, new answers).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

from sheaf_core.backend import Backend
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.spec import CachePolicy
from sheaf_server.engine.metrics import ModelMetrics

ALWAYS_EXCLUDED = frozenset({"request_id", "model_name"})


class ResponseCache:
    def __init__(self, model: str, policy: CachePolicy, previous: ResponseCache | None = None,
                 *, timer: Callable[[], float] = time.monotonic) -> None:
        """`previous`: the cache this one replaces (a hot swap); its counters carry on.
        `timer`: the clock entries age by (a test passes its own)."""
        self.policy = policy
        self._metrics = ModelMetrics(model)
        self._entries: TTLCache[bytes, BaseResponse] = TTLCache(
            policy.max_entries, policy.ttl_s, timer=timer)
        self._excluded: set[str] = set(ALWAYS_EXCLUDED | set(policy.exclude_fields))
        self.hits: int = previous.hits if previous else 0
        self.misses: int = previous.misses if previous else 0
        #: requests not cacheable (not deterministic)
        self.bypassed: int = previous.bypassed if previous else 0

    def key(self, request: BaseRequest, backend: Backend[Any, Any]) -> bytes | None:
        """The request's key, or None when its answer must not be cached."""
        if not backend.deterministic(request):
            self.bypassed += 1
            return None
        canonical = request.model_dump_json(exclude=self._excluded).encode()
        return hashlib.blake2b(canonical, digest_size=16).digest()

    def get(self, key: bytes) -> BaseResponse | None:
        """A copy of the stored response (the caller stamps its own id on it), counted."""
        response = self._entries.get(key)
        if response is None:
            self.misses += 1
            self._metrics.cache_misses.inc()
            return None
        self.hits += 1
        self._metrics.cache_hits.inc()
        return response.model_copy()

    def put(self, key: bytes, response: BaseResponse) -> None:
        self._entries[key] = response.model_copy()

    def summary(self) -> dict[str, Any]:
        """GET /models/NAME → cache."""
        return {"hits": self.hits, "misses": self.misses, "bypassed": self.bypassed,
                "entries": len(self._entries), "max_entries": self.policy.max_entries,
                "ttl_s": self.policy.ttl_s}
