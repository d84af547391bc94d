"""Errors that cross package boundaries.

Each carries enough for a host to answer well. `RequestError`s are a request's outcomes
(`InvalidRequest`: a 422 naming fields; `DeadlineExceeded`: 504; `PayloadUnavailable`: 502;
`UnsupportedPayload`: 415 — the servers add their own, e.g. overload); `ConfigError` is a
start-up failure, `PluginError` a model that cannot be built.
"""

from __future__ import annotations

from dataclasses import dataclass


class SheafError(Exception):
    """Base class of every error Sheaf raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field: `field` is a dotted path such as `quantile_levels.2`."""

    field: str
    message: str
    type: str = "value_error"


class RequestError(SheafError):
    """A request's outcome other than a response: what went wrong, said for the caller.

    `code` is a stable machine-readable name; hosts give each code its status (Sheaf's
    servers: `sheaf_server.engine.errors.STATUS`, the one table). `problems` name the
    fields at fault; `retry_after` (seconds) says when trying again may work; `request_id`
    is the id the request was answered under, stamped by the host's request path.
    """

    code = "internal_error"

    def __init__(self, message: str, *, problems: list[FieldProblem] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[FieldProblem] = list(problems or [])
        self.retry_after = retry_after
        self.request_id: str | None = None


class InvalidRequest(RequestError):
    """A request is well-formed but this model cannot answer it (a 422, never a 500).

    Backends raise it from `Backend.validate_request`, naming the field at fault, e.g. a
    quantile level outside what the model was trained on. `message` is an optional summary
    (default: the problems themselves).

    Also accepted, for code written against the engine's former `RequestInvalid`:
    `InvalidRequest("summary", problems=[...])`.
    """

    code = "invalid_request"

    def __init__(self, problems: list[FieldProblem] | FieldProblem | str | None = None,
                 field: str = "body", *, message: str | None = None,
                 retry_after: float | None = None) -> None:
        if isinstance(problems, str):
            problems = [FieldProblem(field=field, message=problems)]
        elif isinstance(problems, FieldProblem):
            problems = [problems]
        problems = problems or []
        super().__init__(message or "; ".join(f"{p.field}: {p.message}" for p in problems),
                         problems=problems, retry_after=retry_after)


class DeadlineExceeded(RequestError):
    """The request's deadline passed before its answer (a 504). Backends meet it as
    `sheaf_core.deadlines.DeadlinePassed` (the same class) at their next step."""

    code = "deadline_exceeded"


class PayloadUnavailable(RequestError):
    """Storage a request named (an input or output URI) could not be reached or written;
    hosts answer 502, as a gateway whose upstream failed."""

    code = "storage_unavailable"


class UnsupportedPayload(RequestError):
    """A body in a format this server cannot read (a media type no codec takes, or a codec
    whose libraries are not installed); hosts answer 415."""

    code = "unsupported_media_type"


class ConfigError(SheafError):
    """A configuration file or ModelSpec is wrong; the message names the model and the field."""


class PluginError(SheafError):
    """A backend or model type is unknown, broken, or registered twice."""


class UpdateFailed(SheafError):
    """A hot swap could not happen (the new backend failed to build or load); the model
    keeps serving what it served before."""
