"""The job routes, on every host (the same app serves tier 1 and the Ray ingress):

- `POST /{name}/jobs` — the body of `/{name}/predict`, checked as `/predict` checks it
  (`ServedModel.validate`: a bad body is a 422 now, never a failed job later), queued →
  202 `{job_id, status_url, status}` with `Location`. `Idempotency-Key` makes a retried
  submit answer the first job. A `callback_url` (in a JSON body, or as a query parameter)
  is checked against `jobs.callbacks_allowed_prefixes`.
- `GET /jobs/{id}` — status, timestamps, attempts, progress, and the result (JSON inline;
  otherwise `result_url`). `GET /jobs/{id}/result` — the result as it was encoded.
- `DELETE /jobs/{id}` — cancel a queued job; a running one whose model streams stops at
  its next step (202); otherwise 409.
- `GET /jobs?model=&status=&limit=` — recent jobs, newest first.

With API keys, a job belongs to the key that submitted it: only that key (or an `admin`
key) reads, lists or cancels it — to any other a job is as absent as an unknown id (404).
Without keys, a job id (192 random bits) is what reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_server.asgi.body import read_body
from sheaf_server.asgi.errors import ERROR_RESPONSES
from sheaf_server.asgi.openapi import request_body
from sheaf_server.asgi.request_id import STATE_KEY
from sheaf_server.engine import Call, ServedModel, ServingEngine
from sheaf_server.engine.errors import FieldProblem, InvalidRequest, JobConflict, JobNotFound
from sheaf_server.jobs.callbacks import FIELD as CALLBACK_FIELD
from sheaf_server.jobs.callbacks import check_callback
from sheaf_server.jobs.store import Job, JobStatus, JobStore
from sheaf_server.security.middleware import caller
from sheaf_server.settings import JobSettings

IDEMPOTENCY_HEADER = "idempotency-key"
#: How a route makes its `Call`: through the app's admission check (asgi.app `_call`).
CallOf = Callable[[Request, str, bytes], Call]


def add_job_routes(app: FastAPI, engine: ServingEngine, settings: JobSettings,
                   call_of: CallOf) -> JobStore:
    """Register the job routes; `call_of(request, name, body)` makes a route's `Call`
    through the app's admission check (keys, scopes, rate limits), as /predict does."""
    store = JobStore(settings)
    for name, runtime in engine.models.items():
        if settings.models is None or name in settings.models:  # what a worker runs
            _add_submit(app, engine, runtime, store, call_of)

    @app.get("/jobs", tags=["jobs"], summary="Recent jobs, newest first (with API keys: "
             "this key's; all for an admin key)")
    async def list_jobs(request: Request, model: str | None = None,
                        status: JobStatus | None = None,
                        limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
        principal = caller(request.scope)
        owner = None if principal is None or principal.admin else principal.id
        jobs = await store.recent(model=model, status=status, owner=owner, limit=limit)
        return {"jobs": [job.document() for job in jobs]}

    @app.get("/jobs/{job_id}", tags=["jobs"], responses=ERROR_RESPONSES,
             summary="A job's status, progress, and result once it succeeded")
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return (await _owned(request, store, job_id)).document(with_result=True)

    @app.get("/jobs/{job_id}/result", tags=["jobs"], responses=ERROR_RESPONSES,
             summary="A succeeded job's result, as the model encoded it")
    async def get_result(request: Request, job_id: str) -> Response:
        job = await _owned(request, store, job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise JobConflict(f"job {job_id!r} is {job.status.value}; a result exists once "
                              "it succeeded")
        if job.result is None:
            raise JobConflict(f"job {job_id!r}'s result is stored at {job.result_url}")
        return Response(job.result, media_type=job.result_media_type or JSON_MEDIA_TYPE)

    @app.delete("/jobs/{job_id}", tags=["jobs"], responses=ERROR_RESPONSES,
                summary="Cancel a queued job (a running one stops at its next step when "
                "its model streams)")
    async def cancel_job(request: Request, job_id: str) -> JSONResponse:
        await _owned(request, store, job_id)
        outcome = await store.cancel(job_id)
        return JSONResponse({"job_id": job_id, "status": outcome},
                            status_code=200 if outcome == "cancelled" else 202)

    return store


def _add_submit(app: FastAPI, engine: ServingEngine, runtime: ServedModel, store: JobStore,
                call_of: CallOf) -> None:
    name = runtime.name

    async def submit(request: Request) -> JSONResponse:
        body = await read_body(request, engine.settings)
        body, callback_url = _callback_of(request, body)
        call = call_of(request, name, body)  # may this caller call the model at all?
        if callback_url is not None:
            check_callback(callback_url, store.settings)
        settled = await runtime.validate(call)
        request.scope["state"][STATE_KEY] = settled.request_id
        principal = caller(request.scope)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 1 <= len(key) <= 255:
            raise InvalidRequest(FieldProblem("Idempotency-Key", "expected 1 to 255 "
                                              "characters"), message="bad header")
        submitted = await store.submit(
            name, body, media_type=call.media_type, owner=principal.id if principal else "",
            request_id=settled.request_id, callback_url=callback_url, idempotency_key=key)
        url = f"/jobs/{submitted.job_id}"
        headers = {"Location": url}
        status = "queued"
        if not submitted.created:  # the first submit's job, as it stands now
            headers["Idempotent-Replayed"] = "true"
            status = (await store.get(submitted.job_id)).status.value
        return JSONResponse({"job_id": submitted.job_id, "status_url": url,
                             "status": status}, status_code=202, headers=headers)

    app.add_api_route(
        f"/{name}/jobs", submit, methods=["POST"], tags=["jobs", f"model: {name}"],
        status_code=202, responses={202: {"description": "Queued: `{job_id, status_url}` and "
                                          "a Location header"}, **ERROR_RESPONSES},
        summary=f"{runtime.summary} — as an asynchronous job",
        operation_id=f"submit_job_{name}", openapi_extra=request_body(runtime.contract))


def _callback_of(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """The callback URL a submit names — `callback_url` in a JSON body (taken out: the
    model's request has no such field) or a query parameter — and the body without it."""
    url = request.query_params.get(CALLBACK_FIELD)
    if b'"callback_url"' in body:
        try:
            data = json.loads(body)
        except ValueError:
            return body, url  # the model's parser names what is wrong with it
        if isinstance(data, dict) and CALLBACK_FIELD in data:
            value = data.pop(CALLBACK_FIELD)
            if not isinstance(value, str):
                raise InvalidRequest(FieldProblem(CALLBACK_FIELD, "expected a URL string"),
                                     message="the request body is invalid")
            return json.dumps(data).encode(), value
    return body, url


async def _owned(request: Request, store: JobStore, job_id: str) -> Job:
    """The job, if this caller may see it: the key that submitted it, or an admin key."""
    job = await store.get(job_id)
    principal = caller(request.scope)
    if principal is not None and not principal.admin and job.owner != principal.id:
        raise JobNotFound(f"no job {job_id!r}")
    return job
