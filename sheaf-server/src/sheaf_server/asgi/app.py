"""The FastAPI app: routes over the engine. Every route's logic lives in the engine; this
module only reads bodies, maps outcomes to HTTP, and documents the API.

Routes: POST /{name}/predict, POST /{name}/stream (server-sent events), GET /{name}/health,
GET /{name}/ready, GET /health, GET /ready, GET /models, GET /models/{name}, and SageMaker's
POST /invocations and GET /ping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from sheaf_core.codecs import media_type_of
from sheaf_core.errors import FieldProblem
from sheaf_core.pipeline_spec import PipelineSpec
from sheaf_core.registry import Registry
from sheaf_core.spec import ModelSpec
from sheaf_server import __version__
from sheaf_server.asgi.accept import check_accept
from sheaf_server.asgi.body import read_body
from sheaf_server.asgi.errors import ERROR_RESPONSES, error_body, error_response
from sheaf_server.asgi.events import server_sent_events
from sheaf_server.asgi.fast_path import FastPathMiddleware, Handler, render_error
from sheaf_server.asgi.metrics import MetricsMiddleware
from sheaf_server.asgi.openapi import answer_formats, body_models, build_openapi, request_body
from sheaf_server.asgi.request_id import GENERATED_KEY, STATE_KEY, RequestIdMiddleware
from sheaf_server.asgi.routes import MODEL_ROUTES, model_paths
from sheaf_server.asgi.tracing import add_tracing
from sheaf_server.engine import (
    Call,
    ClientGone,
    Engine,
    InvalidRequest,
    ModelNotFound,
    RequestError,
    ServedModel,
    ServingEngine,
    status_of,
)
from sheaf_server.engine.errors import Forbidden
from sheaf_server.engine.metrics import exposition
from sheaf_server.engine.served import StreamingModel
from sheaf_server.engine.state import ModelState
from sheaf_server.security.middleware import Admission
from sheaf_server.security.setup import add_authentication, add_cors, admission, server_keys
from sheaf_server.settings import JobSettings, ServerSettings, SheafConfig

log = logging.getLogger("sheaf.server")
T = TypeVar("T")
SAGEMAKER_TARGET = "x-amzn-sagemaker-target-model"
#: Content types of a MultiRecord body (Batch Transform with SplitType Line).
JSON_LINES = {"application/jsonlines", "application/x-jsonlines", "application/jsonl"}


def build_app(specs: Iterable[ModelSpec] | SheafConfig, *,
              settings: ServerSettings | None = None, registry: Registry | None = None,
              plugins: Iterable[object] = ()) -> FastAPI:
    """A FastAPI app serving `specs` (or a whole `SheafConfig`).

    Backends are constructed now (bad kwargs raise ConfigError at once) and loaded in the
    background when the app starts; /ready answers 503 with the reason until they are.
    `plugins` adds in-process plugin objects to those discovered from entry points.
    """
    pipelines: list[PipelineSpec] = []
    jobs: JobSettings | None = None
    if isinstance(specs, SheafConfig):
        settings = settings or specs.server
        pipelines = list(specs.pipelines)
        jobs = specs.jobs
        specs = specs.models
    return create_app(Engine(specs, settings, registry, plugins, pipelines=pipelines),
                      jobs=jobs)


def create_app(engine: ServingEngine, *, jobs: JobSettings | None = None) -> FastAPI:
    """The app around an already built engine: a local `Engine`, or the Ray ingress's
    engine whose models live in other replicas. Routes see only the `ServingEngine`
    protocol, so both hosts answer alike. `jobs` (a config's `jobs:`) adds the job routes
    (`sheaf_server.jobs.routes`)."""
    closing: list[Callable[[], Awaitable[None]]] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            for close in closing:
                await close()

    keys = server_keys(engine.settings, list(engine.models))  # ConfigError before serving
    app = FastAPI(title="Sheaf", version=__version__, lifespan=lifespan,
                  description="Typed inference endpoints for non-text foundation models.")
    app.state.engine = engine
    app.state.admission = admission(engine.settings)
    app.state.api_keys = keys is not None  # the OpenAPI document then names the schemes
    hot_paths: dict[str, Handler] = {
        f"/{name}/predict": partial(_predict, engine=engine, runtime=runtime)
        for name, runtime in engine.models.items()}
    hot_paths["/invocations"] = partial(_invocations, engine=engine)
    app.add_middleware(FastPathMiddleware, handlers=hot_paths)
    add_authentication(app, keys, engine.settings)  # inside the request id: refusals have one
    app.add_middleware(RequestIdMiddleware)  # outside the fast path, so it has ids
    add_tracing(app, list(engine.models))  # the request's span, when tracing is on
    add_cors(app, engine.settings)  # outside the key check: preflights carry no key
    app.add_middleware(MetricsMiddleware, models=list(engine.models),  # outermost: times all
                       access_log=engine.settings.access_log,
                       access_log_exclude=engine.settings.access_log_exclude)
    _add_error_handlers(app)
    _add_server_routes(app, engine)
    for runtime in engine.models.values():
        _add_model_routes(app, engine, runtime)
    if jobs is not None:
        from sheaf_server.jobs.routes import add_job_routes  # needs sheaf-server[jobs]

        closing.append(add_job_routes(app, engine, jobs, _call).close)
    #: the models and pipelines that take jobs (`jobs.models`, default all; none without
    #: a `jobs:` section)
    app.state.jobs = set() if jobs is None else set(jobs.models or engine.models)
    _add_unknown_model_routes(app, engine)
    models = list({m: None for r in engine.models.values() for m in body_models(r.contract)})
    app.openapi = partial(build_openapi, app, models)  # type: ignore[method-assign]
    return app


# -- handlers shared by routes -----------------------------------------------------------------

async def _predict(request: Request, engine: ServingEngine, runtime: ServedModel,
                   body: bytes | None = None) -> Response:
    """HTTP around the engine's request path: read the body, watch the connection, and
    answer under the id the engine settled on."""
    if body is None:
        body = await read_body(request, engine.settings)
    state = request.scope["state"]
    answer = await _until_disconnect(request, runtime.handle(_call(request, runtime.name, body)))
    state[STATE_KEY] = answer.request_id
    check_accept(request.headers.get("accept"), answer.media_type)
    return Response(answer.body, media_type=answer.media_type)


def _call(request: Request, name: str, body: bytes) -> Call:
    """The `Call` an HTTP request makes: its body and media type, and the id the request-id
    middleware settled (generated, or the caller's X-Request-ID) — once the caller may make
    it (`Admission`: its key's scopes, the rate limits)."""
    request.app.state.admission.admit(request.scope, name)
    state = request.scope["state"]
    return Call(name, state[STATE_KEY], body, id_generated=state[GENERATED_KEY],
                media_type=media_type_of(request.headers.get("content-type")))


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (a queued request is then
    dropped before it reaches the backend)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientGone("the client disconnected before the answer was ready") from None
    finally:
        watcher.cancel()


async def _stream(request: Request, engine: ServingEngine, name: str,
                  runtime: StreamingModel) -> Response:
    """Server-sent events (`asgi.events`): `progress` events as the backend reports them,
    then one `result` (the response, as `predict` returns it) or one `error`.
    Whatever fails before the stream starts — not ready, a 422, overload — is a plain error
    response. A client that disconnects cancels the request (see `engine.streaming`)."""
    body = await read_body(request, engine.settings)
    state = request.scope["state"]
    state[STATE_KEY], stream = await runtime.stream(_call(request, name, body))
    return EventSourceResponse(server_sent_events(stream, state[STATE_KEY]))


def _add_model_routes(app: FastAPI, engine: ServingEngine, runtime: ServedModel) -> None:
    name = runtime.name
    tag = f"model: {name}"

    async def predict(request: Request) -> Response:
        return await _predict(request, engine, runtime)

    if isinstance(runtime, StreamingModel):
        streaming: StreamingModel = runtime

        async def stream(request: Request) -> Response:
            return await _stream(request, engine, name, streaming)

        app.add_api_route(
            f"/{name}/stream", stream, methods=["POST"], tags=[tag],
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events, then `result` (the predict "
                             "response) or `error`"}, **ERROR_RESPONSES},
            summary=f"{runtime.summary} — streamed as server-sent events",
            operation_id=f"stream_{name}", openapi_extra=request_body(runtime.contract))

    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "state": runtime.state.value}

    async def ready() -> JSONResponse:
        ok = runtime.state is ModelState.READY
        return JSONResponse({"ready": ok, "model": name, "state": runtime.state.value,
                             "reason": runtime.reason}, status_code=200 if ok else 503)

    app.add_api_route(
        f"/{name}/predict", predict, methods=["POST"], tags=[tag],
        response_model=runtime.contract.response,
        responses={**answer_formats(runtime.contract), **ERROR_RESPONSES},
        summary=runtime.summary,
        operation_id=f"predict_{name}", openapi_extra=request_body(runtime.contract))
    app.add_api_route(f"/{name}/health", health, methods=["GET"], tags=[tag],
                      summary=f"Liveness of {name}", operation_id=f"health_{name}")
    app.add_api_route(f"/{name}/ready", ready, methods=["GET"], tags=[tag],
                      summary=f"Readiness of {name}: 503 with the reason until loaded",
                      operation_id=f"ready_{name}")


def _add_server_routes(app: FastAPI, engine: ServingEngine) -> None:
    @app.get("/health", tags=["server"], summary="Liveness of the process")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["server"],
             summary="200 once every model serves (server.ready_when: all) or one does "
             "(any); else 503 naming each model not ready and why")
    async def ready() -> JSONResponse:
        ok, models = engine.readiness()
        body: dict[str, Any] = {"ready": ok, "models": models}
        if not ok:
            waiting = [f"{name} ({m['state']}: {m['reason']})" for name, m in models.items()
                       if m["state"] != ModelState.READY.value]
            body["message"] = "not ready: " + ", ".join(waiting)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/models", tags=["server"], summary="Served models with their JSON schemas "
             "(with API keys: those the key may call; every one for an admin key)")
    async def models(request: Request) -> dict[str, Any]:
        return {"models": [await _listing(runtime, name in request.app.state.jobs)
                           for name, runtime in engine.models.items()
                           if Admission.visible(request.scope, name)]}

    @app.get("/models/{name}", tags=["server"], summary="One served model")
    async def model(request: Request, name: str) -> dict[str, Any]:
        runtime = engine.model(name)
        if not Admission.visible(request.scope, name):
            raise Forbidden(f"this API key may not call {name!r}")
        return await _listing(runtime, name in request.app.state.jobs)

    @app.get("/metrics", tags=["server"], summary="Prometheus metrics of every model "
             "(requests, latency, queue wait and depth, batch sizes, load time, cache)")
    async def prometheus_metrics(request: Request) -> Response:
        Admission.require_admin(request.scope, "GET /metrics")
        body, content_type = await asyncio.to_thread(exposition)  # may read many files
        return Response(body, media_type=content_type)

    @app.get("/ping", tags=["sagemaker"], summary="SageMaker health: the default model's "
             "readiness", response_class=Response,
             responses={200: {"description": "Ready (no body)"},
                        503: {"description": "Not ready (no body)"}})
    async def ping() -> Response:
        name = engine.default_model
        runtimes = [engine.models[name]] if name else list(engine.models.values())
        ok = any(r.state is ModelState.READY for r in runtimes)
        return Response(status_code=200 if ok else 503)

    @app.get("/execution-parameters", tags=["sagemaker"],
             summary="SageMaker Batch Transform: MaxConcurrentTransforms, BatchStrategy and "
             "MaxPayloadInMB for this container (server.sagemaker, server.max_body_bytes)")
    async def execution_parameters() -> dict[str, Any]:
        settings = engine.settings
        return {"MaxConcurrentTransforms": settings.sagemaker.max_concurrent_transforms,
                "BatchStrategy": settings.sagemaker.batch_strategy,
                "MaxPayloadInMB": max(1, min(100, settings.max_body_bytes // 2**20))}

    @app.post("/invocations", tags=["sagemaker"], responses=ERROR_RESPONSES,
              summary="SageMaker inference: predict with the default model (or the model "
              "named by X-Amzn-SageMaker-Target-Model or the body's model_name); with "
              "Content-Type application/jsonlines, one request per line and one JSON line "
              "per record back, in order (Batch Transform MultiRecord)")
    async def invocations(request: Request) -> Response:
        return await _invocations(request, engine)


async def _invocations(request: Request, engine: ServingEngine) -> Response:
    body = await read_body(request, engine.settings)
    name = request.headers.get(SAGEMAKER_TARGET) or engine.default_model
    many = media_type_of(request.headers.get("content-type")) in JSON_LINES
    if name is None:
        name = _model_name_in(body if not many else body.split(b"\n", 1)[0])
    if many:
        return await _predict_lines(request, engine.model(name), body)
    return await _predict(request, engine, engine.model(name), body)


async def _predict_lines(request: Request, runtime: ServedModel, body: bytes) -> Response:
    """SageMaker Batch Transform's MultiRecord: one JSON request per line in, one JSON line
    per record out, in order. Records run concurrently, so they batch together; a record
    that fails answers its error body on its line (with `status`) and the others are
    answered — one bad record does not fail the rest of the mini-batch."""
    check_accept(request.headers.get("accept"), "application/jsonlines")
    request.app.state.admission.admit(request.scope, runtime.name)
    records = [line for line in body.split(b"\n") if line.strip()]
    base = request.scope["state"][STATE_KEY]

    async def one(number: int, record: bytes) -> bytes:
        request_id = f"{base}-{number}"
        try:
            return (await runtime.handle(Call(runtime.name, request_id, record,
                                              id_generated=True))).body
        except RequestError as exc:
            return json.dumps({**error_body(exc, exc.request_id or request_id),
                               "status": status_of(exc)}).encode()

    lines = await _until_disconnect(request, asyncio.gather(
        *(one(number, record) for number, record in enumerate(records, 1))))
    return Response(b"".join(line + b"\n" for line in lines),
                    media_type="application/jsonlines")


def _model_name_in(body: bytes) -> str:
    try:
        value = json.loads(body).get("model_name")
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str):
        raise InvalidRequest(FieldProblem(
            "model_name", "name the model in the body, in the X-Amzn-SageMaker-Target-Model "
            "header, or set server.default_model"),
            message="several models are served and none is the default")
    return value


def _add_unknown_model_routes(app: FastAPI, engine: ServingEngine) -> None:
    """Any other /{name}/... answers 404 naming the served models."""

    async def unknown(request: Request, name: str) -> Response:
        runtime = engine.model(name)  # raises ModelNotFound listing the served models
        routes = ", ".join(model_paths(name, streams=isinstance(runtime, StreamingModel),
                                       jobs=name in request.app.state.jobs))
        why = ""
        if request.url.path.endswith("/jobs") and not request.app.state.jobs:
            why = " (this server queues no jobs: add a `jobs:` section to its config)"
        elif request.url.path.endswith("/jobs"):
            why = " (no worker runs its jobs: it is not in jobs.models)"
        raise ModelNotFound(f"model {name!r} has no route {request.url.path!r}{why}; it "
                            f"serves {routes}")

    for route, method in MODEL_ROUTES.items():
        app.add_api_route(f"/{{name}}/{route}", unknown, methods=[method],
                          include_in_schema=False)


async def _listing(runtime: ServedModel, jobs: bool) -> dict[str, Any]:
    info = await runtime.describe()
    info["routes"] = model_paths(runtime.name, streams=isinstance(runtime, StreamingModel),
                                 jobs=jobs)
    info["request_schema"] = runtime.contract.request.model_json_schema()
    info["response_schema"] = runtime.contract.response.model_json_schema(mode="serialization")
    return info


def _add_error_handlers(app: FastAPI) -> None:
    def rid(request: Request) -> str:
        return request.scope.get("state", {}).get(STATE_KEY, "")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return render_error(exc, request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error = RequestError(str(exc.detail))
        error.code = _code(exc.status_code)
        response = error_response(error, rid(request), status=exc.status_code)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return render_error(exc, request.scope)


def _code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
