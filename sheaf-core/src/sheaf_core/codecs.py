"""Request bodies other than a contract's JSON: body codecs, chosen by the Content-Type.

A contract may register codecs with itself (``register("weather", WeatherRequest,
WeatherResponse, codecs=[...])``). A codec turns the body into the contract's typed request
and says how to answer: the response in the caller's format (NetCDF in, NetCDF out), or a
short JSON note after writing the result where the caller asked (an output URI). Requests
then take the one request path as any other — checks, batching, the backend — and the
codec's reply encodes the response at the end.

Codecs run in a worker thread: they may parse hundreds of megabytes or read object storage.
What they may touch by URI is the server's to decide (`PayloadSettings`): nothing unless
the operator lists allowed prefixes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import FieldProblem, InvalidRequest

JSON_MEDIA_TYPE = "application/json"
#: Content types a JSON body arrives with in practice (curl -d sends a form type).
_JSON_LIKE = {"", JSON_MEDIA_TYPE, "text/json", "text/plain",
              "application/x-www-form-urlencoded"}


def media_type_of(content_type: str | None) -> str:
    """`Content-Type: Application/X-NetCDF; charset=...` → `application/x-netcdf`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(media_type: str) -> bool:
    """Whether a body of this media type is read as the contract's JSON."""
    return media_type in _JSON_LIKE or media_type.endswith("+json")


@dataclass(frozen=True)
class Decoded:
    """A body read by a codec: the typed request, and how to answer it. `reply` None means
    the contract's JSON response."""

    request: BaseRequest
    reply: Callable[[BaseResponse], bytes] | None = None
    media_type: str = JSON_MEDIA_TYPE


class PayloadSettings(BaseModel):
    """What request payloads may name by URI (`server.payloads` in sheaf.yaml).

    Reading or writing a URI a caller sent is the server acting on the caller's behalf, so
    it is off until the operator lists the prefixes it may use.
    """

    model_config = ConfigDict(extra="forbid")

    allowed_uri_prefixes: list[str] = Field(
        default_factory=list, description="URIs a request may read from or write to must "
        "start with one of these, e.g. s3://forecasts/ or /data/weather/ (local paths are "
        "compared after resolving symlinks and '..'). Empty: no URIs.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options for those URIs, e.g. "
        "{client_kwargs: {endpoint_url: http://minio:9000}} for an S3-compatible store.")

    def check_uri(self, field: str, uri: str) -> str:
        """`uri` if a request may use it, else InvalidRequest naming `field` and the
        setting. Local paths come back absolute and resolved."""
        if not self.allowed_uri_prefixes:
            raise InvalidRequest(FieldProblem(field, "this server does not read or write "
                                 "payloads by URI; the operator enables it with "
                                 "server.payloads.allowed_uri_prefixes"))
        remote = "://" in uri and not uri.startswith("file://")
        if remote:
            scheme_path = uri.split("://", 1)[1]
            if any(part in {"..", "."} for part in scheme_path.split("/")):
                raise InvalidRequest(FieldProblem(field, "must not contain '.' or '..' "
                                                  "segments"))
            candidate, prefixes = uri, [p for p in self.allowed_uri_prefixes if "://" in p]
        else:
            candidate = os.path.realpath(uri.removeprefix("file://"))
            prefixes = [os.path.realpath(p.removeprefix("file://")) for p in
                        self.allowed_uri_prefixes if "://" not in p or
                        p.startswith("file://")]
        for prefix in prefixes:
            if candidate == prefix or candidate.startswith(prefix.rstrip("/") + "/"):
                return candidate
        raise InvalidRequest(FieldProblem(field, f"{uri!r} is not under an allowed prefix "
                                          f"(server.payloads.allowed_uri_prefixes: "
                                          f"{self.allowed_uri_prefixes})"))


class BodyCodec(ABC):
    """Reads one family of media types into a contract's request; see the module doc."""

    #: Media types this codec reads; the first is the one it answers with.
    media_types: ClassVar[tuple[str, ...]]
    #: One line for the OpenAPI document.
    summary: ClassVar[str] = ""
    #: For a codec of JSON bodies: the model such a body may follow instead of the
    #: contract's request (documented as an alternative in OpenAPI). None for binary ones.
    json_schema: ClassVar[type[BaseModel] | None] = None

    @abstractmethod
    def read(self, body: bytes, payloads: PayloadSettings) -> Decoded:
        """The typed request and its reply. Raise InvalidRequest (or let a pydantic
        ValidationError through) for a body that is wrong, PayloadUnavailable when storage
        cannot be reached, UnsupportedPayload when this server cannot read the format."""
