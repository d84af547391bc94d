"""The fields every request and response share, whatever the model type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.contracts.limits import WorkLimits

if TYPE_CHECKING:
    from sheaf_core.contracts.features import FeatureReference

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class BaseRequest(BaseModel):
    """Fields common to every request.

    `model_type` is declared by each subclass as a `Literal` defaulting to its own value, so a
    body may omit it when the route already names the model, and a wrong value is a 422.
    Numbers must be finite: `NaN`/`Infinity` (which Python's JSON reader accepts) are a 422
    naming the field; contracts mark missing values with `null` where they allow them.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model_type_name: ClassVar[str] = ""
    #: The contract's work limits (`sheaf_core.contracts.limits`): what one request may ask
    #: of a model, with defaults a model's spec adjusts under `limits:`.
    Limits: ClassVar[type[WorkLimits]] = WorkLimits

    request_id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Caller's id; the server uses the X-Request-ID header or generates one "
        "when absent, and echoes it in the response.",
    )
    model_name: str | None = Field(
        default=None,
        max_length=128,
        description="Optional. On a model's route the route decides which model answers "
        "(the response's model_name says which did); on POST /invocations it selects the "
        "model.",
    )

    def deterministic(self) -> bool:
        """Whether this request pins everything random about its answer, so an identical
        request may be answered from the response cache. Contracts with a seed say False
        when it is absent."""
        return True

    def feature_reference(self) -> FeatureReference | None:
        """The feature-store data this request names instead of sending it (None: it sent
        everything). The server reads it and calls `with_features` before caching and
        batching."""
        return None

    def with_features(self, values: Mapping[str, Any]) -> Self:
        """This request completed with the feature values read (feature name → value, None
        where the store has none); a pydantic ValidationError locates what does not fit."""
        raise NotImplementedError(f"{type(self).__name__} names no features")


class BaseResponse(BaseModel):
    """Fields common to every response; the engine fills `request_id` and `model_name`.

    Numbers must be finite: JSON has no NaN, and writing one as `null` would break the
    schema that promises a number. A backend that computes a non-finite value fails that
    request (a 500 the server logs) instead of answering it wrongly."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request_id: str | None = None
    model_name: str | None = None
