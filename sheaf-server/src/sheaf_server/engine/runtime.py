"""One served model in this process: its spec, backend, contract, load state, batcher,
cache and feature store — and its lifecycle (load, hot swap, describe).

What a request does with them is `engine.request_path`, the one place the path is written;
`handle` and `stream` here are that path's entries for this model.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from functools import partial
from typing import Any, ClassVar

from sheaf_core.backend import Backend
from sheaf_core.codecs import PayloadSettings
from sheaf_core.contracts.base import BaseResponse
from sheaf_core.contracts.limits import WorkLimits
from sheaf_core.errors import ConfigError, UpdateFailed
from sheaf_core.registry import ContractEntry
from sheaf_core.spec import BatchingPolicy, ModelSpec, model_limits
from sheaf_server.engine import request_path
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.batcher import DynamicBatcher
from sheaf_server.engine.cache import ResponseCache
from sheaf_server.engine.call import Call
from sheaf_server.engine.features import FeatureStoreReader
from sheaf_server.engine.loading import load_model
from sheaf_server.engine.state import ModelState, ensure_serving
from sheaf_server.engine.streaming import Stream

log = logging.getLogger("sheaf.engine")


class ModelBase:
    """What a served model is to a host wherever it runs (here, or in Ray replicas): its
    spec and contract, deadline, state, the 503 while not ready, and the description's
    static part."""

    def __init__(self, spec: ModelSpec, contract: ContractEntry, default_timeout_s: float,
                 loading_reason: str = "loading weights") -> None:
        self.spec = spec
        self.contract = contract
        self.default_timeout_s = default_timeout_s
        self.timeout_s = spec.timeout_s or default_timeout_s
        #: What one request may ask of this model (the spec's `limits`).
        self.limits = _limits(spec, contract)
        self.state = ModelState.LOADING
        self.reason: str | None = loading_reason
        #: How many times the model was hot-swapped (`update`); 0 as first loaded.
        self.generation = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def summary(self) -> str:
        """One line for the OpenAPI document."""
        return (f"Predict with {self.name} ({self.contract.model_type}, backend "
                f"{self.spec.backend})")

    def respec(self, spec: ModelSpec) -> None:
        """Adopt an updated spec's serving settings (the deadline)."""
        self.spec = spec
        self.timeout_s = spec.timeout_s or self.default_timeout_s
        self.limits = _limits(spec, self.contract)

    def ensure_ready(self) -> None:
        ensure_serving(f"model {self.name!r}", self.state, self.reason)

    def description(self) -> dict[str, Any]:
        """The listing entry (GET /models) without live counters."""
        return {
            "name": self.name,
            "backend": self.spec.backend,
            "model_type": self.contract.model_type,
            "state": self.state.value,
            "reason": self.reason,
            "batching": self.spec.batching.model_dump(),
            "timeout_s": self.timeout_s,
            "limits": self.limits.model_dump(),
            "generation": self.generation,
        }


class ModelRuntime(ModelBase):
    """Serves one `ModelSpec` in this process. Build it with a constructed (not loaded)
    backend."""

    is_pipeline: ClassVar[bool] = False
    #: Served by worker processes (`workers.process_engine`): never here.
    forwards: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, backend: Backend[Any, Any], contract: ContractEntry,
                 default_timeout_s: float, payloads: PayloadSettings | None = None) -> None:
        super().__init__(spec, contract, default_timeout_s)
        self.backend = backend
        #: What bodies may name by URI (codecs read and write them).
        self.payloads = payloads or PayloadSettings()
        self.cache = ResponseCache(spec.name, spec.cache) if spec.cache.enabled else None
        #: The Feast store requests may name features in (`features:` in the spec).
        self.features = feature_reader(spec)
        self.load_seconds: float | None = None
        self.batcher = DynamicBatcher(spec.name, partial(request_path.run_batch, self, backend),
                                      batching_policy(spec, backend))
        self._serialize = contract.response.__pydantic_serializer__.to_json
        self._swap_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Load and warm up the backend in a thread (`loading.load_model`: one load at a
        time in the process); a failure marks this model failed, not the server."""
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, partial(
                load_model, self.backend, self.features, self.contract.response,
                warmup=self.spec.warmup, stage=self._loading_stage))
        except Exception as exc:
            self.state = ModelState.FAILED
            self.reason = f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %r failed to load:\n%s", self.name, traceback.format_exc())
            return
        self.load_seconds = time.perf_counter() - started
        self.batcher.metrics.load_seconds.set(self.load_seconds)
        self.state, self.reason = ModelState.READY, None
        log.info("model %r ready in %.2fs", self.name, self.load_seconds)

    async def swap(self, spec: ModelSpec, backend: Backend[Any, Any],
                   drain_timeout_s: float) -> None:
        """Hot swap: load `backend` (constructed from `spec`) while the current one keeps
        serving, then route new requests to it in one step, let the old batcher finish what
        it had queued or running on the old backend, and release that backend.

        No request is refused or lost on the way; for a while both backends are in memory.
        A load failure raises `UpdateFailed` and leaves the model as it was. The contract
        (model type) must stay the same: routes and the OpenAPI document are built for it.
        """
        if spec.name != self.name:
            raise ConfigError(f"model {self.name!r}: name: an update cannot rename a model "
                              f"(got {spec.name!r})")
        if type(backend).model_type != self.contract.model_type:
            raise ConfigError(f"model {self.name!r}: backend: {spec.backend!r} serves "
                              f"{type(backend).model_type!r}, but this model serves "
                              f"{self.contract.model_type!r}; an update keeps the model type "
                              "(serve the new one under another name)")
        async with self._swap_lock:  # one swap at a time per model, applied in call order
            started = time.perf_counter()
            features = feature_reader(spec)
            try:
                await asyncio.get_running_loop().run_in_executor(None, partial(
                    load_model, backend, features, self.contract.response,
                    warmup=spec.warmup))
            except Exception as exc:
                log.error("update of model %r failed to load:\n%s", self.name,
                          traceback.format_exc())
                raise UpdateFailed(f"model {self.name!r}: the new backend failed to load "
                                   f"({type(exc).__name__}: {exc}); still serving the "
                                   "previous one") from exc
            batcher = DynamicBatcher(spec.name, partial(request_path.run_batch, self, backend),
                                     batching_policy(spec, backend), stats=self.batcher.stats)
            batcher.start()
            old_backend, old_batcher = self.backend, self.batcher
            # The switch itself: no await between these lines, so every request either
            # entered the old batcher already or enters the new one.
            self.backend, self.batcher, self.features = backend, batcher, features
            self.cache = (ResponseCache(spec.name, spec.cache, self.cache)
                          if spec.cache.enabled else None)
            self.respec(spec)
            self.load_seconds = time.perf_counter() - started
            batcher.metrics.load_seconds.set(self.load_seconds)
            self.generation += 1
            if self.state is not ModelState.READY:  # an update also repairs a failed load
                self.state, self.reason = ModelState.READY, None
            log.info("model %r updated (generation %d) in %.2fs", self.name,
                     self.generation, self.load_seconds)
            await old_batcher.close(drain_timeout_s)
            _close_quietly(old_backend, self.name)

    def _loading_stage(self, stage: str) -> None:
        """Worker thread: what the first load is doing now (the reason /ready shows)."""
        if self.state is ModelState.LOADING:
            self.reason = stage

    # -- entries into the request path (engine.request_path) -------------------------------

    async def handle(self, call: Call) -> Answer:
        return await request_path.predict(self, call)

    async def stream(self, call: Call) -> tuple[str, Stream]:
        return await request_path.stream(self, call)

    async def validate(self, call: Call) -> Call:
        return await request_path.validate(self, call)

    def encode(self, response: BaseResponse) -> bytes:
        return self._serialize(response)

    async def describe(self) -> dict[str, Any]:
        """The model's entry in the listing (GET /models), with its batch counters."""
        info = self.description()
        info["batching"] = self.batcher.policy.model_dump()  # with the backend's batch_keys
        info["stats"] = self.batcher.stats.summary(queued=self.batcher.queued)
        info["cache"] = self.cache.summary() if self.cache is not None else None
        if self.state is ModelState.READY:
            try:
                info["details"] = self.backend.describe()
            except Exception as exc:  # describe is informative only
                info["details"] = {"error": str(exc)}
        return info


def _limits(spec: ModelSpec, contract: ContractEntry) -> WorkLimits:
    """A model's limits; a pipeline (on Ray, a deployment like a model) has none of its
    own: each of its models checks its own."""
    return model_limits(spec, contract.request) if isinstance(spec, ModelSpec) else WorkLimits()


def feature_reader(spec: ModelSpec) -> FeatureStoreReader | None:
    return FeatureStoreReader(spec.name, spec.features) if spec.features else None


def batching_policy(spec: ModelSpec, backend: Backend[Any, Any]) -> BatchingPolicy:
    """The spec's batching policy, its `bucket_by` extended with the backend's `batch_keys`
    (what requests must share to go in one model call)."""
    missing = [key for key in type(backend).batch_keys if key not in spec.batching.bucket_by]
    if not missing:
        return spec.batching
    return spec.batching.model_copy(update={"bucket_by": [*spec.batching.bucket_by, *missing]})


def _close_quietly(backend: Backend[Any, Any], name: str) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing a backend of model %r failed", name)
