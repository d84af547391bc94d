"""Typed Python clients for a Sheaf server: `SheafClient` (sync) and `AsyncSheafClient`.

`predict(model, request)` sends a typed request — or a plain dict, which the server validates
— and returns the contract's typed response (for a dict, the model's contract as
`GET /models/{model}` names it, asked once per model);
`stream(model, request)` yields `Progress` events, then the `Result`. Refusals a server
means to be retried — 429, 502, 503, 504, and connections that could not be made — are
retried with exponential backoff and jitter (stamina), waiting what the server's
`Retry-After` says when it says it. Any other error is raised at once as `SheafHTTPError`,
carrying the status, the error code, the request id and the server's field problems.

`pip install 'sheaf-core[client]'` (httpx, httpx-sse, stamina).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import stamina
from httpx_sse import EventSource, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import FieldProblem, SheafError
from sheaf_core.registry import Registry, default_registry

log = logging.getLogger("sheaf.client")
#: What `predict`/`stream` send: a typed request, or a dict the server validates.
Request = BaseRequest | Mapping[str, Any]
EVENT_STREAM = "text/event-stream"
#: Error codes whose status is retryable in general but not for this error: waiting will
#: not help (a model whose load failed).
PERMANENT = frozenset({"model_failed"})
#: Keys a server adds to every event's data beside the payload (`type`, `done`).
STREAM_MARKERS = ("type", "done")


class RetryPolicy(BaseModel):
    """When and how long the client retries a refused request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=5, ge=1, description="Tries in all (1: never retry).")
    timeout_s: float = Field(default=120.0, gt=0, description="Give up retrying after this "
                             "long in all.")
    wait_initial_s: float = Field(default=0.2, ge=0)
    wait_max_s: float = Field(default=10.0, ge=0)
    wait_jitter_s: float = Field(default=0.5, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0, description="A longer Retry-After "
                                     "is cut to this.")
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})


class SheafHTTPError(SheafError):
    """The server answered an error: its status, code, message, the request id it was
    answered under, the fields at fault (422), and Retry-After when it sent one."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None,
                 problems: list[FieldProblem], retry_after: float | None) -> None:
        self.status, self.code, self.message = status, code, message
        self.request_id, self.problems, self.retry_after = request_id, problems, retry_after
        fields = "; ".join(f"{p.field}: {p.message}" for p in problems)
        super().__init__(f"{status} {code}: {message} (request id {request_id})"
                         + (f" — {fields}" if fields else ""))

    @classmethod
    def from_reply(cls, status: int, headers: Mapping[str, str], content: bytes,
                   ) -> SheafHTTPError:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict):  # not sheaf's error body (a proxy's page, say)
            body = {"message": content[:300].decode(errors="replace")}
        problems = [FieldProblem(d.get("field", "body"), d.get("message", ""),
                                 d.get("type", "value_error"))
                    for d in body.get("details") or [] if isinstance(d, dict)]
        return cls(body.get("status", status), body.get("error", f"http_{status}"),
                   body.get("message", ""), body.get("request_id") or
                   headers.get("x-request-id"), problems, _retry_after(headers))


class JobFailed(SheafError):
    """A job ended without a result: failed (its `error` says why) or cancelled."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = dict(job)
        error = job.get("error") or {}
        why = error.get("message") or job["status"]
        super().__init__(f"job {job['job_id']} {job['status']}: {why}")


@dataclass(frozen=True)
class Progress:
    """A progress event of a streamed prediction; `data` holds all of it, with what a
    backend adds (e.g. a weather step's forecast)."""

    step: int
    total: int | None
    message: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """The last event of a stream: the typed response, as `predict` returns it."""

    response: BaseResponse


class _Wire:
    """What both clients share: URLs, bodies, typed answers, and the retry decision."""

    def __init__(self, retry: RetryPolicy | None, registry: Registry | None) -> None:
        self.retry = retry or RetryPolicy()
        self.registry = registry
        #: model name → its model type, for requests sent as dicts (from GET /models/NAME)
        self.model_types: dict[str, str] = {}

    def call(self, request: Request, model_type: str, request_id: str | None,
             ) -> tuple[bytes, dict[str, str], type[BaseResponse]]:
        """The body, headers and response type of one call (`model_type`: the model's)."""
        registry = self.registry or default_registry()
        response_type = registry.contract(model_type).response
        headers = {"content-type": "application/json"}
        if request_id is not None:
            headers["x-request-id"] = request_id
        content = (request.model_dump_json().encode() if isinstance(request, BaseRequest)
                   else json.dumps(dict(request)).encode())
        return content, headers, response_type

    @staticmethod
    def known_type(request: Request) -> str | None:
        """The model type a typed request names; None for a dict (ask the server)."""
        return request.model_type if isinstance(request, BaseRequest) else None  # type: ignore[attr-defined]

    def learn_type(self, model: str, reply: httpx.Response) -> str:
        """The model type from GET /models/NAME's answer (an error raises)."""
        if reply.status_code != 200:
            raise SheafHTTPError.from_reply(reply.status_code, reply.headers, reply.content)
        model_type: str = reply.json()["model_type"]
        self.model_types[model] = model_type
        return model_type

    def attempts(self) -> Any:
        """stamina's retry iterator (sync or async) for one call under the policy."""
        policy = self.retry
        return stamina.retry_context(
            on=self.backoff, attempts=policy.attempts, timeout=policy.timeout_s,
            wait_initial=policy.wait_initial_s, wait_max=policy.wait_max_s,
            wait_jitter=policy.wait_jitter_s)

    def backoff(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: False (raise), True (the usual backoff), or seconds.
        Called for every failed attempt, the last too (then stamina raises)."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            log.info("sheaf client: cannot connect (%s); retryable", exc)
            return True
        if not isinstance(exc, SheafHTTPError) or exc.status not in self.retry.statuses:
            return False
        if exc.code in PERMANENT:
            return False
        if exc.retry_after is None:
            log.info("sheaf client: %s %s; retryable with backoff", exc.status, exc.code)
            return True
        wait = min(exc.retry_after, self.retry.max_retry_after_s)
        log.info("sheaf client: %s %s; retryable after %.2fs (Retry-After %s)", exc.status,
                 exc.code, wait, exc.retry_after)
        return wait

    @staticmethod
    def answer(reply: httpx.Response, response_type: type[BaseResponse]) -> BaseResponse:
        if reply.status_code != 200:
            raise SheafHTTPError.from_reply(reply.status_code, reply.headers, reply.content)
        return response_type.model_validate_json(reply.content)

    @staticmethod
    def event(sse: ServerSentEvent, response_type: type[BaseResponse],
              ) -> Progress | Result:
        data = json.loads(sse.data)
        if sse.event == "result":
            for marker in STREAM_MARKERS:  # sheaf-serve's stream readers need them
                data.pop(marker, None)
            return Result(response_type.model_validate(data))
        if sse.event == "error":
            raise SheafHTTPError.from_reply(int(data.get("status", 500)), {},
                                            sse.data.encode())
        return Progress(int(data.get("step", 0)), data.get("total"), data.get("message"),
                        data)


def _headers(headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    """The client's headers: `headers`, plus the API key (`api_key`, else $SHEAF_API_KEY)
    as a bearer token."""
    merged = dict(headers or {})
    key = api_key if api_key is not None else os.environ.get("SHEAF_API_KEY")
    if key:
        merged["authorization"] = f"Bearer {key}"
    return merged


class SheafClient:
    """A blocking client: ``with SheafClient("http://127.0.0.1:8000") as client:
    client.predict("chronos", TimeSeriesRequest(history=[...], horizon=12))``."""

    def __init__(self, base_url: str, *, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 registry: Registry | None = None, http: httpx.Client | None = None,
                 api_key: str | None = None, verify: bool | str = True) -> None:
        """`api_key`: sent as `Authorization: Bearer` (default: $SHEAF_API_KEY); `verify`:
        TLS verification — True, False, or a CA bundle's path (a private CA)."""
        self._wire = _Wire(retry, registry)
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout, verify=verify,
                                         headers=_headers(headers, api_key))

    def predict(self, model: str, request: Request, *,
                request_id: str | None = None) -> BaseResponse:
        content, headers, response_type = self._wire.call(
            request, self._model_type(model, request), request_id)
        for attempt in self._wire.attempts():
            with attempt:
                reply = self.http.post(f"/{model}/predict", content=content, headers=headers)
                return self._wire.answer(reply, response_type)
        raise AssertionError("unreachable: stamina raises the last error")

    def stream(self, model: str, request: Request, *,
               request_id: str | None = None) -> Iterator[Progress | Result]:
        """Progress events as the server sends them, then the Result. A refusal before the
        first event is retried like `predict`; nothing is retried once events flow."""
        content, headers, response_type = self._wire.call(
            request, self._model_type(model, request), request_id)
        outgoing = self.http.build_request("POST", f"/{model}/stream", content=content,
                                           headers={**headers, "accept": EVENT_STREAM})
        for attempt in self._wire.attempts():
            with attempt:
                reply = self.http.send(outgoing, stream=True)
                if reply.status_code != 200:
                    reply.read()
                    reply.close()
                    self._wire.answer(reply, response_type)  # raises
        try:  # events flow: outside the retries
            for sse in EventSource(reply).iter_sse():
                yield self._wire.event(sse, response_type)
        finally:
            reply.close()

    def _model_type(self, model: str, request: Request) -> str:
        known = self._wire.known_type(request) or self._wire.model_types.get(model)
        return known or self._wire.learn_type(model, self.http.get(f"/models/{model}"))

    # -- asynchronous jobs (a server with a `jobs:` section; docs/jobs.md) ---------------

    def submit(self, model: str, request: Request, *, request_id: str | None = None,
               idempotency_key: str | None = None, callback_url: str | None = None) -> str:
        """Queue `request` as a job; its id. Retried like `predict` — safely: every try
        carries one Idempotency-Key (yours, or one made here), so a submit whose answer
        was lost is not queued twice."""
        content, headers, _ = self._wire.call(request, self._model_type(model, request),
                                              request_id)
        headers["idempotency-key"] = idempotency_key or uuid.uuid4().hex
        params = {"callback_url": callback_url} if callback_url else None
        for attempt in self._wire.attempts():
            with attempt:
                reply = self.http.post(f"/{model}/jobs", content=content, headers=headers,
                                       params=params)
                if reply.status_code != 202:
                    raise SheafHTTPError.from_reply(reply.status_code, reply.headers,
                                                    reply.content)
                job_id: str = reply.json()["job_id"]
                return job_id
        raise AssertionError("unreachable: stamina raises the last error")

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id}: status, timestamps, attempts, progress, result or error."""
        return self._json("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> str:
        """Cancel a queued job ("cancelled") or stop a running streamed one
        ("cancelling"); a `SheafHTTPError` 409 for a finished job."""
        status: str = self._json("DELETE", f"/jobs/{job_id}")["status"]
        return status

    def jobs(self, *, model: str | None = None, status: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        """GET /jobs: recent jobs, newest first."""
        params = {k: v for k, v in (("model", model), ("status", status),
                                    ("limit", limit)) if v is not None}
        jobs: list[dict[str, Any]] = self._json("GET", "/jobs", params=params)["jobs"]
        return jobs

    def wait(self, job_id: str, *, timeout_s: float = 3600.0,
             poll_s: float = 0.5) -> BaseResponse:
        """Poll until the job finishes: its typed response, or `JobFailed` carrying the
        job's error (failed or cancelled); TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] == "succeeded":
                model_type = self._model_type(job["model"], {})
                response_type = (self._wire.registry or default_registry()).contract(
                    model_type).response
                if "result" in job:
                    return response_type.model_validate(job["result"])
                reply = self.http.get(f"/jobs/{job_id}/result")
                return self._wire.answer(reply, response_type)
            if job["status"] in ("failed", "cancelled"):
                raise JobFailed(job)
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after "
                                   f"{timeout_s} s")
            time.sleep(poll_s)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in self._wire.attempts():
            with attempt:
                reply = self.http.request(method, path, **kwargs)
                if not 200 <= reply.status_code < 300:
                    raise SheafHTTPError.from_reply(reply.status_code, reply.headers,
                                                    reply.content)
                body: dict[str, Any] = reply.json()
                return body
        raise AssertionError("unreachable: stamina raises the last error")

    def models(self) -> list[dict[str, Any]]:
        """GET /models: each served model with its state, batching and schemas."""
        models: list[dict[str, Any]] = self.http.get("/models").raise_for_status().json()[
            "models"]
        return models

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """Block until GET /ready answers 200 (TimeoutError naming the states if not)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = self.http.get("/ready")
                if reply.status_code == 200:
                    return
                states = reply.text
            except httpx.TransportError as exc:
                states = str(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server is not ready after {timeout_s}s: {states}")
            time.sleep(poll_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SheafClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSheafClient:
    """The asyncio twin of `SheafClient`."""

    def __init__(self, base_url: str, *, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 registry: Registry | None = None,
                 http: httpx.AsyncClient | None = None, api_key: str | None = None,
                 verify: bool | str = True) -> None:
        self._wire = _Wire(retry, registry)
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                              verify=verify, headers=_headers(headers, api_key))

    async def predict(self, model: str, request: Request, *,
                      request_id: str | None = None) -> BaseResponse:
        content, headers, response_type = self._wire.call(
            request, await self._model_type(model, request), request_id)
        async for attempt in self._wire.attempts():
            with attempt:
                reply = await self.http.post(f"/{model}/predict", content=content,
                                             headers=headers)
                return self._wire.answer(reply, response_type)
        raise AssertionError("unreachable: stamina raises the last error")

    async def stream(self, model: str, request: Request, *,
                     request_id: str | None = None) -> AsyncIterator[Progress | Result]:
        content, headers, response_type = self._wire.call(
            request, await self._model_type(model, request), request_id)
        outgoing = self.http.build_request("POST", f"/{model}/stream", content=content,
                                           headers={**headers, "accept": EVENT_STREAM})
        async for attempt in self._wire.attempts():
            with attempt:
                reply = await self.http.send(outgoing, stream=True)
                if reply.status_code != 200:
                    await reply.aread()
                    await reply.aclose()
                    self._wire.answer(reply, response_type)  # raises
        try:  # events flow: outside the retries
            async for sse in EventSource(reply).aiter_sse():
                yield self._wire.event(sse, response_type)
        finally:
            await reply.aclose()

    async def _model_type(self, model: str, request: Request) -> str:
        known = self._wire.known_type(request) or self._wire.model_types.get(model)
        return known or self._wire.learn_type(model, await self.http.get(f"/models/{model}"))

    async def models(self) -> list[dict[str, Any]]:
        reply = (await self.http.get("/models")).raise_for_status()
        models: list[dict[str, Any]] = reply.json()["models"]
        return models

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncSheafClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
