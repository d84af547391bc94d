"""Errors that cross package boundaries.

Each carries enough for a host to answer well: hosts map `InvalidRequest` to 422,
`ConfigError` to a start-up failure, `PluginError` to a model that cannot be built.
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


class InvalidRequest(SheafError):
    """A request is well-formed but this model cannot answer it (a 422, never a 500).

    Backends raise it from `Backend.validate_request`, naming the field at fault, e.g. a
    quantile level outside what the model was trained on.
    """

    def __init__(self, problems: list[FieldProblem] | FieldProblem | str, field: str = "body"):
        if isinstance(problems, str):
            problems = [FieldProblem(field=field, message=problems)]
        elif isinstance(problems, FieldProblem):
            problems = [problems]
        self.problems: list[FieldProblem] = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class ConfigError(SheafError):
    """A configuration file or ModelSpec is wrong; the message names the model and the field."""


class PluginError(SheafError):
    """A backend or model type is unknown, broken, or registered twice."""


class UpdateFailed(SheafError):
    """A hot swap could not happen (the new backend failed to build or load); the model
    keeps serving what it served before."""


class PayloadUnavailable(SheafError):
    """Storage a request named (an input or output URI) could not be reached or written;
    hosts answer 502, as a gateway whose upstream failed."""


class UnsupportedPayload(SheafError):
    """A body in a format this server cannot read (a media type no codec takes, or a codec
    whose libraries are not installed); hosts answer 415."""
