"""One served model: its spec, backend, contract, load state and batcher.

This is the request path written once — parse → validate → batch → backend → encode — for
every host. The ASGI app, the Ray Serve deployment and the batch runner all call it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import StrEnum
from functools import partial
from typing import Any

from pydantic import ValidationError

from sheaf_core.backend import Backend
from sheaf_core.codecs import JSON_MEDIA_TYPE, Decoded, PayloadSettings
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.limits import WorkLimits
from sheaf_core.deadlines import DeadlinePassed
from sheaf_core.errors import (
    ConfigError,
    FieldProblem,
    InvalidRequest,
    PayloadUnavailable,
    UnsupportedPayload,
    UpdateFailed,
)
from sheaf_core.registry import ContractEntry
from sheaf_core.spec import BatchingPolicy, ModelSpec, model_limits
from sheaf_server.engine import tracing
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.batcher import DynamicBatcher
from sheaf_server.engine.cache import ResponseCache
from sheaf_server.engine.errors import (
    BackendFailed,
    ClientGone,
    DeadlineExceeded,
    EngineError,
    ModelFailed,
    ModelNotReady,
    RequestInvalid,
    StorageUnavailable,
    UnsupportedMediaType,
)
from sheaf_server.engine.features import FeatureStoreReader
from sheaf_server.engine.loading import load_model
from sheaf_server.engine.streaming import (
    Stream,
    StreamCancelled,
    StreamJob,
    open_stream,
    run_stream,
)

log = logging.getLogger("sheaf.engine")


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


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
        self.batcher = DynamicBatcher(spec.name, partial(self.run_batch, backend),
                                      batching_policy(spec, backend))
        self._validate_json = contract.request.model_validate_json
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
            batcher = DynamicBatcher(spec.name, partial(self.run_batch, backend),
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

    # -- the request path --------------------------------------------------------------------

    def parse(self, body: bytes | str) -> BaseRequest:
        """Validate a JSON body against the contract (422 if not); `check` comes next."""
        return parse_body(self._validate_json, body)

    async def decode(self, body: bytes | str, media_type: str) -> Decoded:
        """The body as a typed request, by its media type (see `decode_body`)."""
        return await decode_body(self.contract, self._validate_json, self.payloads, body,
                                 media_type)

    async def reply(self, decoded: Decoded, response: BaseResponse) -> Answer:
        return await encode_answer(decoded, response, self._serialize)

    async def prepare(self, request: BaseRequest) -> BaseRequest:
        """A typed request made ready for the cache and the batcher: completed from the
        feature store when it names features (in a worker thread), then checked."""
        reference = request.feature_reference()
        if reference is None:
            self.check(request)
            return request
        with tracing.step("sheaf.features", {"sheaf.model": self.name,
                                             "sheaf.feature_view": reference.feature_view}):
            return await asyncio.to_thread(self.complete, request)

    def complete(self, request: BaseRequest) -> BaseRequest:
        """`prepare` in a worker thread (the batch runner's rows): the features a request
        names read and filled in — 422 for a model without a feature store or values that
        do not fit, 404 for an unknown entity, 502 for a store that cannot be read — then
        the model's checks."""
        reference = request.feature_reference()
        if reference is not None:
            if self.features is None:
                raise RequestInvalid("this model reads no feature store", problems=[
                    FieldProblem("features", f"model {self.name!r} has no feature store "
                                 "(`features:` in its spec); send the data itself")])
            values = self.features.read(reference)
            try:
                request = request.with_features(values)
            except ValidationError as exc:
                raise RequestInvalid("the features read do not make a valid request",
                                     problems=problems_from(exc)) from None
        self.check(request)
        return request

    def check(self, request: BaseRequest) -> None:
        """Model-level checks of an already typed request: the work it asks for against
        the model's limits, then the backend's own checks."""
        over = self.limits.problems(request)
        if over:
            raise RequestInvalid("the request asks for more work than this model allows",
                                 problems=over)
        try:
            self.backend.validate_request(request)
        except InvalidRequest as exc:
            raise RequestInvalid("this model cannot answer the request",
                                 problems=exc.problems) from None

    async def handle(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     timeout_s: float | None = None,
                     media_type: str = JSON_MEDIA_TYPE) -> Answer:
        """The whole request path for one body, the same for every host: ready? → decode
        (JSON, or the contract's codec for `media_type`) → check → batch → backend →
        encode (as the body chose). `body_id_wins`: the host generated `request_id` (the
        caller sent none), so a `request_id` in the body is used instead. `timeout_s`: what
        is left of the deadline when a host already spent some (Ray's ingress); default the
        model's. An `EngineError` raised here carries the id, so the host's error names it
        too."""
        decoded, request_id = await self._accept(body, request_id, body_id_wins, media_type)
        try:
            response = await self.predict(decoded.request, request_id, timeout_s)
            return await self.reply(decoded, response)
        except EngineError as exc:
            exc.request_id = request_id
            raise

    async def stream(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     timeout_s: float | None = None,
                     media_type: str = JSON_MEDIA_TYPE) -> tuple[str, Stream]:
        """The request path of `handle` for a streamed prediction, up to the queue: ready? →
        decode → check → enqueued (or refused: overload, shutdown). Errors up to here are
        raised now, so a host answers them with a plain status; the returned `Stream`
        yields the backend's progress, then the response (stamped with the id) — as JSON,
        or the codec's JSON note (a body that named an output URI); events are text, so a
        binary format (NetCDF) answers its stream's result as JSON."""
        decoded, request_id = await self._accept(body, request_id, body_id_wins, media_type)
        request = decoded.request
        if decoded.media_type != JSON_MEDIA_TYPE:
            decoded = Decoded(request)
        loop = asyncio.get_running_loop()
        job, queue = open_stream(request, loop)
        batcher, deadline = self.batcher, loop.time() + (timeout_s or self.timeout_s)
        try:
            future = batcher.enqueue(job, deadline)
        except EngineError as exc:
            exc.request_id = request_id
            raise

        async def outcome() -> bytes:
            try:
                response = await batcher.outcome(future, deadline)
                return (await self.reply(decoded, self._stamped(response, request_id))).body
            except EngineError as exc:
                exc.request_id = request_id
                raise

        return request_id, Stream(job, queue, outcome)

    async def _accept(self, body: bytes | str, request_id: str, body_id_wins: bool,
                      media_type: str) -> tuple[Decoded, str]:
        """The front of the request path, shared by `handle` and `stream`: ready? → decode
        → check. Returns the decoded body and the id it is answered under."""
        try:
            self.ensure_ready()
            with tracing.step("sheaf.validate", {"sheaf.model": self.name,
                                                 "sheaf.media_type": media_type}):
                decoded = await self.decode(body, media_type)
                if body_id_wins and decoded.request.request_id:
                    request_id = decoded.request.request_id
                request = await self.prepare(decoded.request)
            if request is not decoded.request:  # completed from the feature store
                decoded = replace(decoded, request=request)
        except EngineError as exc:
            exc.request_id = request_id
            raise
        finally:
            tracing.annotate({"sheaf.model": self.name, "sheaf.request_id": request_id})
        return decoded, request_id

    def _stamped(self, response: BaseResponse, request_id: str) -> BaseResponse:
        response.request_id = request_id
        response.model_name = self.name
        return response

    async def answer(self, request: BaseRequest, request_id: str,
                     timeout_s: float | None = None) -> BaseResponse:
        """The typed request path (a pipeline's model node): ready? → features → check →
        batch."""
        self.ensure_ready()
        return await self.predict(await self.prepare(request), request_id, timeout_s)

    async def predict(self, request: BaseRequest, request_id: str,
                      timeout_s: float | None = None) -> BaseResponse:
        """The response from the cache (when the model keeps one and has it), else batch
        the request with others; stamped with the id."""
        self.ensure_ready()
        cache = self.cache
        key = cache.key(request, self.backend) if cache is not None else None
        if cache is not None and key is not None:
            with tracing.step("sheaf.cache", {"sheaf.model": self.name}) as span:
                hit = cache.get(key)
                if span is not None:
                    span.set_attribute("sheaf.cache.hit", hit is not None)
            if hit is not None:
                return self._stamped(hit, request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.timeout_s)
        response = await self.batcher.submit(request, deadline)
        if cache is not None and key is not None and self.cache is cache:  # no hot swap since
            cache.put(key, response)
        return self._stamped(response, request_id)

    def encode(self, response: BaseResponse) -> bytes:
        return self._serialize(response)

    def run_batch(self, backend: Backend[Any, Any],
                  requests: Sequence[BaseRequest]) -> list[Any]:
        """Worker-thread side: `predict_each` on `backend` (the one the batch's batcher
        serves) — or its `stream` for a streamed request — failures mapped to the engine's
        errors."""
        if len(requests) == 1 and isinstance(requests[0], StreamJob):
            try:
                return [run_stream(backend, requests[0])]
            except StreamCancelled as exc:
                return [ClientGone(str(exc))]
            except Exception as exc:
                return [self._failure(exc)]
        return [self._failure(r) if isinstance(r, Exception) else r
                for r in predict_each(backend, requests)]

    def _failure(self, exc: Exception) -> Exception:
        if isinstance(exc, InvalidRequest):
            return RequestInvalid("this model cannot answer the request", problems=exc.problems)
        if isinstance(exc, DeadlinePassed):
            log.info("model %r stopped a batch at its deadline", self.name)
            return DeadlineExceeded(f"model {self.name!r} stopped working on this request at "
                                    "its deadline")
        log.error("backend %r of model %r failed:\n%s", self.spec.backend, self.name,
                  "".join(traceback.format_exception(exc)))
        if _not_finite(exc):  # the response model refused NaN/infinity (contracts/base.py)
            return BackendFailed(f"model {self.name!r} computed a value that is not a finite "
                                 "number (NaN or infinity: the model diverged on this "
                                 "request); the server log has it under this request id")
        return BackendFailed(f"model {self.name!r} failed while answering; the error is in "
                             "the server log under this request id")

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


def _not_finite(exc: Exception) -> bool:
    return isinstance(exc, ValidationError) and any(
        error["type"] == "finite_number" for error in exc.errors())


def _limits(spec: ModelSpec, contract: ContractEntry) -> WorkLimits:
    """A model's limits; a pipeline (on Ray, a deployment like a model) has none of its
    own: each of its models checks its own."""
    return model_limits(spec, contract.request) if isinstance(spec, ModelSpec) else WorkLimits()


def ensure_serving(what: str, state: ModelState, reason: str | None) -> None:
    """Refuse a request to a model or pipeline that is not ready: 503 with Retry-After
    while it loads; 503 without one when its load failed (waiting will not heal it)."""
    if state is ModelState.LOADING:
        raise ModelNotReady(f"{what} is not ready: {reason}", retry_after=5)
    if state is ModelState.FAILED:
        raise ModelFailed(f"{what} cannot serve: {reason}; it serves again after a "
                          "successful update (hot swap) or a restart")


def feature_reader(spec: ModelSpec) -> FeatureStoreReader | None:
    return FeatureStoreReader(spec.name, spec.features) if spec.features else None


def batching_policy(spec: ModelSpec, backend: Backend[Any, Any]) -> BatchingPolicy:
    """The spec's batching policy, its `bucket_by` extended with the backend's `batch_keys`
    (what requests must share to go in one model call)."""
    missing = [key for key in type(backend).batch_keys if key not in spec.batching.bucket_by]
    if not missing:
        return spec.batching
    return spec.batching.model_copy(update={"bucket_by": [*spec.batching.bucket_by, *missing]})


def parse_body(validate_json: Callable[[bytes | str], BaseRequest],
               body: bytes | str) -> BaseRequest:
    """A JSON body as a typed request, or RequestInvalid naming each field (a 422); the
    same for a model's route and a pipeline's."""
    try:
        return validate_json(body)
    except ValidationError as exc:
        raise RequestInvalid("the request body is invalid",
                             problems=problems_from(exc)) from None


async def decode_body(contract: ContractEntry, validate_json: Callable[[bytes | str], BaseRequest],
                      payloads: PayloadSettings, body: bytes | str,
                      media_type: str) -> Decoded:
    """A body as a typed request, by its media type: the contract's JSON on the loop (fast
    and small), another format through the contract's codec in a thread (it may parse a
    large file or read storage). 422 naming fields, 415 for a format the contract lacks,
    502 for storage that fails. The same for model and pipeline routes."""
    try:
        codec = contract.codec(media_type)
    except UnsupportedPayload as exc:
        raise UnsupportedMediaType(str(exc)) from None
    if codec is None:
        return Decoded(parse_body(validate_json, body))
    raw = body.encode() if isinstance(body, str) else body
    try:
        return await asyncio.to_thread(codec.read, raw, payloads)
    except ValidationError as exc:
        raise RequestInvalid("the request body is invalid",
                             problems=problems_from(exc)) from None
    except InvalidRequest as exc:
        raise RequestInvalid("the request body is invalid", problems=exc.problems) from None
    except UnsupportedPayload as exc:
        raise UnsupportedMediaType(str(exc)) from None
    except PayloadUnavailable as exc:
        raise StorageUnavailable(str(exc)) from None


async def encode_answer(decoded: Decoded, response: BaseResponse,
                        serialize: Callable[[BaseResponse], bytes]) -> Answer:
    """The response as the caller's body chose: the contract's JSON, or the codec's format
    (in a thread: it may write storage)."""
    request_id = response.request_id or ""
    with tracing.step("sheaf.encode", {"sheaf.media_type": decoded.media_type}):
        if decoded.reply is None:
            return Answer(request_id, serialize(response))
        try:
            body = await asyncio.to_thread(decoded.reply, response)
        except PayloadUnavailable as exc:
            raise StorageUnavailable(str(exc)) from None
    return Answer(request_id, body, decoded.media_type)


def predict_each(backend: Backend[Any, Any], requests: Sequence[BaseRequest]) -> list[Any]:
    """One backend call for the batch; if it raises, each request alone, so that one bad
    request fails by itself and the rest of its batch is still answered — unless the
    batch's deadline stopped it (every caller has had its answer). A response or the
    exception per request, in order. Shared by the servers and the batch runner."""
    try:
        return _call_backend(backend, requests)
    except Exception as exc:
        if len(requests) == 1 or isinstance(exc, DeadlinePassed):
            return [exc] * len(requests)
    results: list[Any] = []
    for request in requests:
        try:
            results.extend(_call_backend(backend, [request]))
        except Exception as exc:
            results.append(exc)
    return results


def _call_backend(backend: Backend[Any, Any], requests: Sequence[BaseRequest]) -> list[Any]:
    responses = backend.predict(requests)
    if len(responses) != len(requests):
        raise RuntimeError(f"backend {type(backend).__name__} returned {len(responses)} "
                           f"responses for {len(requests)} requests")
    return list(responses)


def _close_quietly(backend: Backend[Any, Any], name: str) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing a backend of model %r failed", name)


def problems_from(exc: ValidationError) -> list[FieldProblem]:
    """Pydantic errors as field problems; union-branch tags are dropped from locations."""
    problems = []
    seen: set[tuple[str, str]] = set()
    for error in exc.errors(include_url=False):
        parts = [str(p) for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
        field = ".".join(parts) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against the model's request schema)"
        if (field, message) not in seen:
            seen.add((field, message))
            problems.append(FieldProblem(field, message, error["type"]))
    return problems
