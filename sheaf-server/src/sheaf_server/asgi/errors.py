"""The error body every failure uses, and its rendering.

``{"error": code, "message": ..., "request_id": ..., "details": [{"field", "message"}]}``;
internals (tracebacks, exception text of a backend) never leave the server.
"""

from __future__ import annotations

import json
import math

from pydantic import BaseModel
from starlette.responses import Response

from sheaf_server.engine.errors import RequestError, status_of


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    error: str
    message: str
    request_id: str
    details: list[FieldError] = []


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "No API key, or an unknown one (server.auth; WWW-Authenticate says how)"),
        (403, "The API key's scopes do not include this model, pipeline or route"),
        (404, "Unknown model, or no entity in the feature store for the request's "
              "`features.entity`"),
        (408, "The request body stopped arriving (server.body_timeout_s)"),
        (409, "A job's state does not allow it (cancelling a finished job)"),
        (413, "Request body over server.max_body_bytes"),
        (415, "A body format (Content-Type) this model does not read; the message lists "
              "those it does"),
        (422, "Invalid request: `details` names each field at fault"),
        (500, "The backend failed; the request id finds the error in the server log"),
        (502, "Storage named by the request (an input or output URI), or the model's "
              "feature store, could not be read"),
        (503, "Model not ready, queue full, job queue unavailable or shutting down; "
              "honour Retry-After"),
        (429, "Over a rate limit (server.rate_limits); honour Retry-After"),
        (504, "The request deadline passed before an answer"),
    )
}


def error_body(exc: RequestError, request_id: str) -> dict[str, object]:
    return {
        "error": exc.code,
        "message": exc.message,
        "request_id": request_id,
        "details": [{"field": p.field, "message": p.message, "type": p.type}
                    for p in exc.problems],
    }


def error_response(exc: RequestError, request_id: str, status: int | None = None) -> Response:
    """`exc` as its status (`engine.errors.STATUS`, unless `status` overrides it: Starlette's
    own 404/405) and the error body."""
    status = status or status_of(exc)
    body = error_body(exc, request_id)
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    headers.update(getattr(exc, "headers", {}))
    if status == 408:  # the rest of the body may still come: this connection is done
        headers["Connection"] = "close"
    return Response(json.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")
