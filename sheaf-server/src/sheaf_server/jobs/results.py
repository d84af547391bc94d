"""Where a finished job's result is kept: in its Redis hash (JSON the status shows inline,
or other bytes `GET /jobs/{id}/result` serves), or — over `jobs.inline_result_max_bytes`
with `jobs.results_uri` set — in a file under that directory or `s3://` prefix (fsspec, with the
`server.payloads.storage_options` payload URIs use), whose URL the status gives. Large
images and weather states then never sit in Redis."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from sheaf_server.settings import JobSettings

#: File extensions for result media types mimetypes does not know.
_EXTENSIONS = {"application/json": ".json", "application/x-netcdf": ".nc",
               "application/jsonlines": ".jsonl"}


def store_result(settings: JobSettings, job_id: str, body: bytes, media_type: str,
                 storage_options: Mapping[str, Any] | None = None) -> dict[str, str | bytes]:
    """The hash fields that record a result (writing it to storage when it is large)."""
    if settings.results_uri is None or len(body) <= settings.inline_result_max_bytes:
        return {"result": body, "result_media_type": media_type}
    import fsspec  # only workers that write large results need it

    extension = _EXTENSIONS.get(media_type) or mimetypes.guess_extension(media_type) or ""
    url = f"{settings.results_uri.rstrip('/')}/{job_id}{extension}"
    with fsspec.open(url, "wb", auto_mkdir=True, **dict(storage_options or {})) as out:
        out.write(body)
    return {"result_url": url, "result_media_type": media_type}
