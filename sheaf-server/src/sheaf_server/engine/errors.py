"""Engine outcomes other than a response, each with the HTTP status a host answers with.

Hosts (ASGI, Ray Serve, batch) map these the same way, so status codes never drift apart.
"""

from __future__ import annotations

from sheaf_core.errors import FieldProblem


class EngineError(Exception):
    """Base: `status` is the HTTP status, `code` a stable machine-readable name."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 problems: list[FieldProblem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.problems = problems or []
        #: The id the failed request was answered under, when the engine knew it better
        #: than the host (a `request_id` taken from the body).
        self.request_id: str | None = None


class RequestInvalid(EngineError):
    status, code = 422, "invalid_request"


class ModelNotFound(EngineError):
    status, code = 404, "model_not_found"


class FeatureEntityNotFound(EngineError):
    """The entity a request's `features` name has no values in the feature store."""

    status, code = 404, "feature_entity_not_found"


class BodyTimeout(EngineError):
    """The client stopped sending its request body."""

    status, code = 408, "request_timeout"


class PayloadTooLarge(EngineError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(EngineError):
    status, code = 415, "unsupported_media_type"


class NotAcceptable(EngineError):
    """The client's Accept header names no type the answer can be given in."""

    status, code = 406, "not_acceptable"


class StorageUnavailable(EngineError):
    """Storage a request named (an input or output URI) failed; the message says which."""

    status, code = 502, "storage_unavailable"


class FeatureStoreUnavailable(EngineError):
    """The model's feature store could not be read; the message says what failed."""

    status, code = 502, "feature_store_unavailable"


class ModelNotReady(EngineError):
    status, code = 503, "model_not_ready"


class ModelFailed(EngineError):
    """The model failed to load (or to warm up): it will not serve until it is updated
    or the server restarts, so no Retry-After."""

    status, code = 503, "model_failed"


class Overloaded(EngineError):
    status, code = 503, "overloaded"


class ShuttingDown(EngineError):
    status, code = 503, "shutting_down"


class DeadlineExceeded(EngineError):
    status, code = 504, "deadline_exceeded"


class BackendFailed(EngineError):
    """The backend raised. The message is generic: internals stay in the server log."""

    status, code = 500, "backend_error"


class ClientGone(EngineError):
    """The client disconnected before its answer was ready (nginx's 499)."""

    status, code = 499, "client_closed_request"
