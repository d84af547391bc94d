"""The fields every request and response share, whatever the model type."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

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


class BaseResponse(BaseModel):
    """Fields common to every response; the engine fills `request_id` and `model_name`."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = None
    model_name: str | None = None
