"""Read a request body without ever holding more than the configured limit."""

from __future__ import annotations

from starlette.requests import Request

from sheaf_server.engine.errors import PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge (413) as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes; the limit is {limit} "
                              "(server.max_body_bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes "
                                  "(server.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
