"""The request path, written once. Every host enters it with a `Call`; nothing else in
Sheaf composes these steps.

    accept:   ready? ─▶ decode (JSON, or the contract's codec) ─▶ settle the id
              ─▶ prepare (features from the store, limits, the backend's checks)
    respond:  cache? ─▶ batch (the model's `DynamicBatcher`) ─▶ backend (a worker thread:
              `run_batch`) ─▶ failures translated (`failure`)
              — or, for a model served by worker processes (`server.workers`), the typed
              call forwarded to one (`compute`), where it enters `respond`
              — or, for a pipeline, its DAG (`PipelineRuntime.run`), whose model nodes
              enter `respond` again
    answer:   stamp (request id, model name) ─▶ encode (JSON, or as the body chose)

Entries, and who uses them:

- `predict(target, call)` → `Answer`: POST /{name}/predict, /invocations, a Ray model or
  pipeline replica (`ray.deployments`), and a job's run in `sheaf-server worker`.
- `validate(target, call)` → the call under its settled id: `accept` alone, for
  POST /{name}/jobs (a job is checked as /predict checks it before it is queued).
- `stream(model, call)` → (id, `Stream`): POST /{name}/stream, on either host.
- `respond(model, call)` → the typed response: a pipeline's model node, in this process or
  in a model replica (typed objects both ways, no JSON between Python ends).
- `answer_rows(model, calls)`: a batch job's rows (sheaf-batch), synchronously in a Ray Data
  worker — the same checks, backend call and failure translation, without the batcher.

Errors are `RequestError`s (sheaf_core.errors; statuses in `engine.errors.STATUS`); each
entry stamps the id it settled on onto the error it raises (`stamp_error`), so a host's
error body names the same id its answer would have.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard, cast

from pydantic import ValidationError

from sheaf_core.backend import Backend
from sheaf_core.codecs import JSON_MEDIA_TYPE, Decoded
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import (
    DeadlineExceeded,
    FieldProblem,
    InvalidRequest,
    RequestError,
)
from sheaf_server.engine import tracing
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import BackendFailed, ClientGone
from sheaf_server.engine.streaming import (
    Stream,
    StreamCancelled,
    StreamJob,
    open_stream,
    run_stream,
)

if TYPE_CHECKING:
    from sheaf_server.engine.pipeline import PipelineRuntime
    from sheaf_server.engine.runtime import ModelRuntime
    from sheaf_server.workers.process_engine import ProcessModel

    Target: TypeAlias = ModelRuntime | PipelineRuntime | ProcessModel

log = logging.getLogger("sheaf.engine")


# -- entries -------------------------------------------------------------------------------

async def predict(target: Target, call: Call) -> Answer:
    """The whole path for one call to a model or a pipeline: the encoded answer and the id
    it was answered under."""
    settled = call
    try:
        decoded, settled = await accept(target, call)
        response = await _respond(target, decoded.request, settled)
        return await encode(target, decoded, stamp(response, target.name, settled.request_id))
    except RequestError as exc:
        stamp_error(exc, settled.request_id)
        raise


async def validate(target: Target, call: Call) -> Call:
    """`accept` without the rest: what /predict would refuse is raised now (a job is
    queued only once it passes); the call under the id it would be answered with."""
    _, settled = await accept(target, call)
    return settled


async def stream(model: ModelRuntime, call: Call) -> tuple[str, Stream]:
    """The path of `predict` for a streamed prediction, up to the queue: accept → enqueued
    (or refused: overload, shutdown). What fails up to here is raised now, so a host
    answers it with a plain status; the `Stream` yields the backend's progress, then the
    response — as JSON, or the codec's JSON note (a body that named an output URI); events
    are text, so a binary format (NetCDF) answers its stream's result as JSON."""
    settled = call
    try:
        decoded, settled = await accept(model, call)
        if decoded.media_type != JSON_MEDIA_TYPE:
            decoded = Decoded(decoded.request)
        loop = asyncio.get_running_loop()
        job, queue = open_stream(decoded.request, loop)
        batcher, deadline = model.batcher, loop.time() + (call.budget_s or model.timeout_s)
        future = batcher.enqueue(job, deadline)
    except RequestError as exc:
        stamp_error(exc, settled.request_id)
        raise
    request_id = settled.request_id

    async def outcome() -> bytes:
        try:
            response = await batcher.outcome(future, deadline)
            return (await encode(model, decoded, stamp(response, model.name, request_id))).body
        except RequestError as exc:
            stamp_error(exc, request_id)
            raise

    return request_id, Stream(job, queue, outcome)


async def respond(model: ModelRuntime | ProcessModel, call: Call) -> BaseResponse:
    """A typed call (`Call.typed`, a pipeline's model node): accept → cache → batch, the
    typed response stamped."""
    try:
        decoded, call = await accept(model, call)
        return stamp(await compute(model, decoded.request, call), model.name,
                     call.request_id)
    except RequestError as exc:
        stamp_error(exc, call.request_id)
        raise


def answer_rows(model: ModelRuntime, calls: Sequence[Call],
                batch_size: int) -> list[bytes | RequestError]:
    """A batch job's typed rows, in this thread (no event loop, no batcher: the job sizes
    its own batches): prepare each (features, checks), the backend in batches of
    `batch_size` (`predict_each`: one failing row fails alone), failures translated as the
    servers translate them, each answer stamped and encoded. One result per call, in
    order."""
    results: list[bytes | RequestError | None] = [None] * len(calls)
    ready: list[tuple[int, Call, BaseRequest]] = []
    for i, call in enumerate(calls):
        request = call.request
        assert request is not None, "answer_rows takes typed calls (Call.typed)"
        call = call.settled(request)
        try:
            ready.append((i, call, complete(model, request)))
        except RequestError as exc:
            results[i] = stamp_error(exc, call.request_id)
    for start in range(0, len(ready), batch_size):
        batch = ready[start:start + batch_size]
        outcomes = run_batch(model, model.backend, [request for _, _, request in batch])
        for (i, call, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, RequestError):
                results[i] = stamp_error(outcome, call.request_id)
            else:
                results[i] = model.encode(stamp(outcome, model.name, call.request_id))
    return [result for result in results if result is not None]


# -- accept: ready? → decode → settle the id → prepare ------------------------------------

async def accept(target: Target, call: Call) -> tuple[Decoded, Call]:
    """The front of the path, shared by every entry. Returns the decoded body (its request
    completed and checked) and the call under the id it is answered with."""
    kind = "sheaf.pipeline" if _is_pipeline(target) else "sheaf.model"
    try:
        target.ensure_ready()
        # A typed call (a pipeline's node, a call forwarded to a model's worker process)
        # is not parsed here, only checked: its span says so.
        step = "sheaf.validate" if call.request is None else "sheaf.check"
        with tracing.step(step, {kind: target.name, "sheaf.media_type": call.media_type}):
            decoded = await decode(target, call)
            call = call.settled(decoded.request)
            request = await prepare(target, decoded.request)
        if request is not decoded.request:  # completed from the feature store
            decoded = replace(decoded, request=request)
    except RequestError as exc:  # under the id the body settled, if it got that far
        stamp_error(exc, call.request_id)
        raise
    finally:
        tracing.annotate({kind: target.name, "sheaf.request_id": call.request_id})
    return decoded, call


async def decode(target: Target, call: Call) -> Decoded:
    """The call's body as a typed request, by its media type: the contract's JSON on the
    loop (fast and small), another format through the contract's codec in a thread (it may
    parse a large file or read storage). 422 naming fields, 415 for a format the contract
    lacks, 502 for storage that fails — each raised by the contract or codec itself."""
    if call.request is not None:
        return Decoded(call.request)
    codec = target.contract.codec(call.media_type)
    if codec is None:
        return Decoded(parse(target.contract.request.model_validate_json, call.body))
    raw = call.body.encode() if isinstance(call.body, str) else call.body
    try:
        return await asyncio.to_thread(codec.read, raw, target.payloads)
    except ValidationError as exc:
        raise InvalidRequest(problems_from(exc), message="the request body is invalid") from None


def parse(validate_json: Callable[[bytes | str], BaseRequest], body: bytes | str) -> BaseRequest:
    """A JSON body as a typed request, or `InvalidRequest` naming each field (a 422)."""
    try:
        return validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(problems_from(exc), message="the request body is invalid") from None


async def prepare(target: Target, request: BaseRequest) -> BaseRequest:
    """A typed request made ready for the cache and the batcher. A model: completed from
    its feature store when the request names features (in a worker thread), then checked.
    A pipeline: its combiners' checks (each model node checks its own on the way in)."""
    if _is_pipeline(target):
        target.check(request)
        return request
    if _is_forwarded(target):  # its worker process prepares it, in `respond` there
        return request
    assert _is_model(target)
    reference = request.feature_reference()
    if reference is None:
        check(target, request)
        return request
    with tracing.step("sheaf.features", {"sheaf.model": target.name,
                                         "sheaf.feature_view": reference.feature_view}):
        return await asyncio.to_thread(complete, target, request)


def complete(model: ModelRuntime, request: BaseRequest) -> BaseRequest:
    """`prepare` in a worker thread: the features a request names read and filled in — 422
    for a model without a feature store or values that do not fit, 404 for an unknown
    entity, 502 for a store that cannot be read — then the model's checks."""
    reference = request.feature_reference()
    if reference is not None:
        if model.features is None:
            raise InvalidRequest(FieldProblem(
                "features", f"model {model.name!r} has no feature store (`features:` in its "
                "spec); send the data itself"), message="this model reads no feature store")
        values = model.features.read(reference)
        try:
            request = request.with_features(values)
        except ValidationError as exc:
            raise InvalidRequest(problems_from(exc), message="the features read do not make "
                                 "a valid request") from None
    check(model, request)
    return request


def check(model: ModelRuntime, request: BaseRequest) -> None:
    """Model-level checks of a typed request: the work it asks for against the model's
    limits, then the backend's own checks."""
    over = model.limits.problems(request)
    if over:
        raise InvalidRequest(over, message="the request asks for more work than this model "
                             "allows")
    try:
        model.backend.validate_request(request)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.problems, message="this model cannot answer the "
                             "request") from None


# -- respond: cache? → batch → backend ----------------------------------------------------

async def _respond(target: Target, request: BaseRequest, call: Call) -> BaseResponse:
    if _is_pipeline(target):
        return await target.run(request, call)
    return await compute(cast("ModelRuntime | ProcessModel", target), request, call)


async def compute(model: ModelRuntime | ProcessModel, request: BaseRequest,
                  call: Call) -> BaseResponse:
    """cache → batch → backend where the model runs: in this process, or — a model served
    by worker processes — the typed call forwarded to one of them, which enters `respond`
    (HTTP, JSON and validation stay in the HTTP worker; the batch forms in the model's
    process, across every HTTP worker's requests)."""
    if _is_forwarded(model):
        return await model.forward(replace(call, request=request, body=b""))
    assert _is_model(model)
    return await _cached_or_batched(model, request, call)


async def _cached_or_batched(model: ModelRuntime, request: BaseRequest,
                             call: Call) -> BaseResponse:
    """The response from the cache (when the model keeps one and has it), else batched with
    others and run by the backend within the call's deadline."""
    cache = model.cache
    key = cache.key(request, model.backend) if cache is not None else None
    if cache is not None and key is not None:
        with tracing.step("sheaf.cache", {"sheaf.model": model.name}) as span:
            hit = cache.get(key)
            if span is not None:
                span.set_attribute("sheaf.cache.hit", hit is not None)
        if hit is not None:
            return hit
    loop = asyncio.get_running_loop()
    response: BaseResponse = await model.batcher.submit(
        request, loop.time() + (call.budget_s or model.timeout_s))
    if cache is not None and key is not None and model.cache is cache:  # no hot swap since
        cache.put(key, response)
    return response


def run_batch(model: ModelRuntime, backend: Backend[Any, Any],
              requests: Sequence[BaseRequest]) -> list[Any]:
    """Worker-thread side of the batcher: `predict_each` on `backend` (the one the batch's
    batcher serves) — or its `stream` for a streamed request — failures translated. A
    response or a `RequestError` per request, in order."""
    if len(requests) == 1 and isinstance(requests[0], StreamJob):
        try:
            return [run_stream(backend, requests[0])]
        except StreamCancelled as exc:
            return [ClientGone(str(exc))]
        except Exception as exc:
            return [failure(model, exc)]
    return [failure(model, r) if isinstance(r, Exception) else r
            for r in predict_each(backend, requests)]


def predict_each(backend: Backend[Any, Any], requests: Sequence[BaseRequest]) -> list[Any]:
    """One backend call for the batch; if it raises, each request alone, so that one bad
    request fails by itself and the rest of its batch is still answered — unless the
    batch's deadline stopped it (every caller has had its answer). A response or the
    exception per request, in order."""
    try:
        return _call_backend(backend, requests)
    except Exception as exc:
        if len(requests) == 1 or isinstance(exc, DeadlineExceeded):
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


def failure(model: ModelRuntime, exc: Exception) -> RequestError:
    """What a backend's exception becomes for its caller — a new error per request (a
    batch's requests each get their own, stamped with their own id): a refusal the backend
    found only while predicting (422), its deadline (504), or a failure whose details stay
    in the server log (500)."""
    if isinstance(exc, InvalidRequest):
        return InvalidRequest(exc.problems, message="this model cannot answer the request")
    if isinstance(exc, DeadlineExceeded):
        log.info("model %r stopped a batch at its deadline", model.name)
        return DeadlineExceeded(f"model {model.name!r} stopped working on this request at "
                                "its deadline")
    if isinstance(exc, RequestError):  # already an outcome (e.g. storage a backend read)
        own = copy.copy(exc)
        own.request_id = None
        return own
    log.error("backend %r of model %r failed:\n%s", model.spec.backend, model.name,
              "".join(traceback.format_exception(exc)))
    if _not_finite(exc):  # the response model refused NaN/infinity (contracts/base.py)
        failed = BackendFailed(f"model {model.name!r} computed a value that is not a finite "
                               "number (NaN or infinity: the model diverged on this "
                               "request); the server log has it under this request id")
    else:
        failed = BackendFailed(f"model {model.name!r} failed while answering; the error is "
                               "in the server log under this request id")
    failed.__cause__ = exc  # for a batch job's errors file; hosts never send it
    return failed


# -- answer: stamp → encode ---------------------------------------------------------------

def stamp(response: BaseResponse, name: str, request_id: str) -> BaseResponse:
    """The one place a response gets the id it answers and the served name that answered
    (a pipeline's name, not its last node's)."""
    response.request_id = request_id
    response.model_name = name
    return response


def stamp_error(exc: RequestError, request_id: str) -> RequestError:
    """The one place an error gets the id its request is answered under. An id already on
    it wins: it was settled further along (a model replica that read the body's id)."""
    exc.request_id = exc.request_id or request_id
    return exc


async def encode(target: Target, decoded: Decoded, response: BaseResponse) -> Answer:
    """The response as the caller's body chose: the contract's JSON, or the codec's format
    (in a thread: it may write storage)."""
    request_id = response.request_id or ""
    with tracing.step("sheaf.encode", {"sheaf.media_type": decoded.media_type}):
        if decoded.reply is None:
            return Answer(request_id, target.encode(response))
        body = await asyncio.to_thread(decoded.reply, response)
    return Answer(request_id, body, decoded.media_type)


# -- helpers -------------------------------------------------------------------------------

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


def _not_finite(exc: Exception) -> bool:
    return isinstance(exc, ValidationError) and any(
        error["type"] == "finite_number" for error in exc.errors())


def _is_pipeline(target: Target) -> TypeGuard[PipelineRuntime]:
    return target.is_pipeline


def _is_model(target: Target) -> TypeGuard[ModelRuntime]:
    return not target.is_pipeline and not target.forwards


def _is_forwarded(target: Target) -> TypeGuard[ProcessModel]:
    return target.forwards
