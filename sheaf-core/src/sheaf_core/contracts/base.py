"""The fields every request and response share, whatever the model type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sheaf_core.contracts.features import FeatureReference

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class BaseRequest(BaseModel):
    """Fields common to every request.

    `model_type` is declared by each subclass as a `Literal` defaulting to its own value, so a
    body may omit it when the route already names the model, and a wrong value is a 422.
    """

    model_config = ConfigDict(extra="forbid")

    model_type_name: ClassVar[str] = ""

    request_id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Caller's id; the server uses the X-Request-ID header or generates one "
        "when absent, and echoes it in the response.",
    )
    model_name: str | None = Field(
        default=None,
        max_length=128,
        description="Optional. Checked against the route's model; selects the model on "
        "POST /invocations.",
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
    """Fields common to every response; the engine fills `request_id` and `model_name`."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = None
    model_name: str | None = None
