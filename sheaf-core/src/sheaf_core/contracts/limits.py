"""How much work one request may ask of a model.

A contract's schema bounds every field on its own (a horizon of at most 4096, at most 1000
samples), but cost grows with their product — a forecast of 4096 steps x 500 sample paths
took a tiny Chronos 14 s and answered 74 MB. Each contract declares a `WorkLimits` model on
its request class (`Limits`): defaults that bound one request's work, which a model's spec
tightens (or loosens, up to the schema's bounds) under `limits:`. A request over a limit is
a 422 naming the field, the limit and the setting; the server checks before it queues.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from sheaf_core.errors import FieldProblem


class WorkLimits(BaseModel):
    """Base of a contract's limits: no limits. Subclasses add fields and `problems`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def problems(self, request: Any) -> list[FieldProblem]:
        """What in `request` exceeds these limits (none by default)."""
        return []


def over_limit(field: str, value: object, limit: object, setting: str,
               what: str = "") -> FieldProblem:
    """A field (or product of fields) over one limit: says the value, the limit and the
    spec setting that holds it."""
    return FieldProblem(field, f"is {value}{what}; this model takes at most {limit} "
                        f"(limits.{setting} in its spec)", "limit_exceeded")
