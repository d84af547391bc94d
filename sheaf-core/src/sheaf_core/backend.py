"""The `Backend` base class every model plugin subclasses.

Lifecycle, as a host drives it:

1. ``Backend(**backend_kwargs)`` — cheap: validates and stores settings, imports nothing heavy.
   Hosts build backends at start-up to fail fast on bad kwargs.
2. ``load()`` — the heavy work (import torch, read weights). Called once, off the event loop,
   one load at a time in a process; then ``predict(warmup_requests())`` — the model is
   served only once it has answered its own samples.
3. ``validate_request(request)`` — per request, before batching: reject what this model
   cannot answer with `InvalidRequest` naming the field (a 422), so a bad request never
   poisons a batch.
4. ``predict(requests)`` — batch-first: a list in, a list of the same length and order out.
   A backend that cannot batch loops inside. The engine fills `request_id`/`model_name`.
5. ``stream(request)`` — optional: yields progress events, then the response.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import FieldProblem

RequestT = TypeVar("RequestT", bound=BaseRequest)
ResponseT = TypeVar("ResponseT", bound=BaseResponse)


class NoSettings(BaseModel):
    """Settings of a backend that takes no kwargs; unknown kwargs are an error."""

    model_config = ConfigDict(extra="forbid")


class ProgressEvent(BaseModel):
    """One step of a streamed prediction."""

    step: int
    total: int | None = None
    message: str | None = None
    preview_b64: str | None = Field(
        default=None, description="A small, rough picture of the result so far (PNG, "
        "base64), for image models when the request asked for previews.")


class Backend(Generic[RequestT, ResponseT]):
    """Base class of model backends. Subclasses set `model_type` and usually `Settings`."""

    #: The model type this backend answers; must be a registered contract.
    model_type: ClassVar[str]
    #: Pydantic model of the accepted ``backend_kwargs`` (extra="forbid" recommended).
    Settings: ClassVar[type[BaseModel]] = NoSettings
    #: Whether `stream()` reports progress: derived from the class (True when a subclass
    #: overrides `stream`), so it cannot disagree with the code; a subclass may still set it.
    supports_streaming: ClassVar[bool] = False
    #: Request fields that must be equal for requests to share one model call (e.g. an
    #: image's size). Hosts add them to the model's `batching.bucket_by`, so batches are
    #: formed of such requests; `predict` must still accept a mixed batch (offline jobs
    #: batch by count), splitting it as it needs.
    batch_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "supports_streaming" not in cls.__dict__:
            cls.supports_streaming = any("stream" in vars(base) for base in cls.__mro__
                                         if base is not Backend and issubclass(base, Backend))

    def deterministic(self, request: RequestT) -> bool:
        """Whether the same request always gets the same answer from this backend, so the
        response cache may keep it. Default: what the request says (a seed pinned); a
        backend that samples without a seed says False."""
        return request.deterministic()

    def __init__(self, **kwargs: Any) -> None:
        self.settings = self.Settings(**kwargs)
        self.loaded = False

    def load(self) -> None:
        """Load weights and anything heavy. Override and call ``super().load()`` last."""
        self.loaded = True

    def warmup_requests(self) -> Sequence[RequestT]:
        """Small, cheap requests the loaded model must answer before it is served (hosts
        call `validate_request` and `predict` on them right after `load`, and check the
        answers against the contract). Called after `load`, so they may depend on the
        loaded model (its grid, its size multiple). Keep them quick: smallest size, one
        step. Default: none — the model is then served once loaded, unproven."""
        return ()

    def preflight(self) -> list[FieldProblem]:
        """What loading will need from this machine and does not find — a weights directory
        or checkpoint that does not exist — one problem per setting (`field` names it, e.g.
        `model_id`). Cheap and side-effect free: `sheaf-server validate` and a tier-1 start
        call it on the constructed backend before any load, so a wrong path is reported as
        one; call it at the start of `load` too (Ray replicas load on other machines).
        Default: nothing to check."""
        return []

    def validate_request(self, request: RequestT) -> None:
        """Raise `InvalidRequest` for a request this model cannot answer. Default: accept."""

    def predict(self, requests: Sequence[RequestT]) -> list[ResponseT]:
        """Answer a batch: same length and order as `requests`."""
        raise NotImplementedError

    def stream(self, request: RequestT) -> Iterator[ProgressEvent | ResponseT]:
        """Yield progress events, then the response. Default: just the response."""
        yield self.predict([request])[0]

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model for the model listing (e.g. its quantiles)."""
        return {}

    def close(self) -> None:
        """Release resources on shutdown. Default: nothing."""
