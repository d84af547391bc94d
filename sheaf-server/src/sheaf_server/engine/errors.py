"""Request outcomes other than a response, and the one table of their HTTP statuses.

`sheaf_core.errors.RequestError` is the base: the outcomes plugins and codecs raise live
there (`InvalidRequest`, `DeadlineExceeded`, `PayloadUnavailable`, `UnsupportedPayload`);
the ones only a server meets (an unknown model, overload, shutdown, a client that left)
are `EngineError`s here. Every host answers each by `STATUS[exc.code]`, so statuses never
drift apart between tier 1, Ray, streams and batch jobs.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from sheaf_core.errors import (
    DeadlineExceeded,
    FieldProblem,
    InvalidRequest,
    PayloadUnavailable,
    RequestError,
    UnsupportedPayload,
)

__all__ = [
    "STATUS",
    "BackendFailed",
    "BodyTimeout",
    "ClientGone",
    "DeadlineExceeded",
    "EngineError",
    "FeatureEntityNotFound",
    "FeatureStoreUnavailable",
    "FieldProblem",
    "Forbidden",
    "InvalidRequest",
    "JobConflict",
    "JobNotFound",
    "JobsUnavailable",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "NotAcceptable",
    "Overloaded",
    "PayloadTooLarge",
    "PayloadUnavailable",
    "RateLimited",
    "RequestError",
    "ShuttingDown",
    "Unauthorized",
    "UnsupportedPayload",
    "status_of",
]


class EngineError(RequestError):
    """An outcome only a server meets; `code` names it (its status: `STATUS`). `headers`:
    what its HTTP answer carries besides Retry-After (e.g. WWW-Authenticate)."""

    headers: dict[str, str] = {}


class ModelNotFound(EngineError):
    code = "model_not_found"


class Unauthorized(EngineError):
    """No API key, or one the server does not know (401 with WWW-Authenticate)."""

    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="sheaf"'}


class Forbidden(EngineError):
    """A valid API key whose scopes do not cover what it asked for."""

    code = "forbidden"


class FeatureEntityNotFound(EngineError):
    """The entity a request's `features` name has no values in the feature store."""

    code = "feature_entity_not_found"


class BodyTimeout(EngineError):
    """The client stopped sending its request body."""

    code = "request_timeout"


class PayloadTooLarge(EngineError):
    code = "payload_too_large"


class NotAcceptable(EngineError):
    """The client's Accept header names no type the answer can be given in."""

    code = "not_acceptable"


class FeatureStoreUnavailable(EngineError):
    """The model's feature store could not be read; the message says what failed."""

    code = "feature_store_unavailable"


class ModelNotReady(EngineError):
    code = "model_not_ready"


class ModelFailed(EngineError):
    """The model failed to load (or to warm up): it will not serve until it is updated
    or the server restarts, so no Retry-After."""

    code = "model_failed"


class Overloaded(EngineError):
    code = "overloaded"


class ShuttingDown(EngineError):
    code = "shutting_down"


class BackendFailed(EngineError):
    """The backend raised. The message is generic: internals stay in the server log."""

    code = "backend_error"


class RateLimited(EngineError):
    """Over a rate limit (`server.rate_limits`): retry after `retry_after` seconds; the
    `RateLimit-*` headers say which limit and when it resets."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, limit: int,
                 remaining: int = 0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining),
                        "RateLimit-Reset": str(max(1, math.ceil(retry_after)))}


class JobNotFound(EngineError):
    """No job has this id (never had one, or it finished more than result_ttl_s ago)."""

    code = "job_not_found"


class JobConflict(EngineError):
    """The job's state does not allow it (cancelling a finished job)."""

    code = "job_conflict"


class JobsUnavailable(EngineError):
    """The job queue (Redis) cannot be reached, is loading or is full: try again shortly."""

    code = "jobs_unavailable"


class ClientGone(EngineError):
    """The client disconnected before its answer was ready (nginx's 499)."""

    code = "client_closed_request"


#: code → HTTP status, for every outcome: the one table hosts answer by.
STATUS: dict[str, int] = {
    RequestError.code: 500,
    BackendFailed.code: 500,
    ModelNotFound.code: 404,
    JobNotFound.code: 404,
    JobConflict.code: 409,
    JobsUnavailable.code: 503,
    FeatureEntityNotFound.code: 404,
    BodyTimeout.code: 408,
    Unauthorized.code: 401,
    Forbidden.code: 403,
    RateLimited.code: 429,
    PayloadTooLarge.code: 413,
    UnsupportedPayload.code: 415,
    NotAcceptable.code: 406,
    InvalidRequest.code: 422,
    ClientGone.code: 499,
    PayloadUnavailable.code: 502,
    FeatureStoreUnavailable.code: 502,
    ModelNotReady.code: 503,
    ModelFailed.code: 503,
    Overloaded.code: 503,
    ShuttingDown.code: 503,
    DeadlineExceeded.code: 504,
}


def status_of(exc: RequestError) -> int:
    """The HTTP status a host answers `exc` with."""
    return STATUS.get(exc.code, 500)


#: Former names of classes now shared with sheaf-core (one class per concept).
_RENAMED = {"RequestInvalid": InvalidRequest, "StorageUnavailable": PayloadUnavailable,
            "UnsupportedMediaType": UnsupportedPayload}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"sheaf_server.engine.errors.{name} is now sheaf_core.errors."
                      f"{new.__name__} (one class per concept); the old name goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def past_deadline(what: str) -> DeadlineExceeded:
    """The one wording of a 504, wherever the deadline is met: a model's batcher, a
    pipeline, a Ray call. `what`: "model 'x'" or "pipeline 'p'"."""
    return DeadlineExceeded(f"no answer from {what} within the request deadline")


def overloaded(what: str, detail: str, retry_after: float) -> Overloaded:
    """The one wording of a full queue (a 503 with Retry-After), in this process's batcher
    or Ray's replica queues."""
    return Overloaded(f"{what} is at capacity ({detail}); retry after {int(max(1, retry_after))} s",
                      retry_after=retry_after)
