"""What the request path hands a host: the body to send, its media type, and the id the
request was answered under."""

from __future__ import annotations

from dataclasses import dataclass

from sheaf_core.codecs import JSON_MEDIA_TYPE


@dataclass(frozen=True, slots=True)
class Answer:
    """A response, encoded: JSON, or the format the caller's body chose (e.g. NetCDF)."""

    request_id: str
    body: bytes
    media_type: str = JSON_MEDIA_TYPE
