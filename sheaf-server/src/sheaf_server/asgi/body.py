"""Read a request body without ever holding more than the configured limit, or waiting on
a client that stopped sending it."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from sheaf_server.engine.errors import BodyTimeout, PayloadTooLarge
from sheaf_server.settings import ServerSettings


async def read_body(request: Request, settings: ServerSettings) -> bytes:
    """The whole body; PayloadTooLarge (413) as soon as it is known to exceed
    `server.max_body_bytes`; BodyTimeout (408) when `server.body_timeout_s` passes without a
    byte of it (a client that stopped mid-body would otherwise hold its connection)."""
    limit, idle = settings.max_body_bytes, settings.body_timeout_s
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes; the limit is {limit} "
                              "(server.max_body_bytes)")
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle) as waiting:
            async for chunk in request.stream():
                waiting.reschedule(loop.time() + idle)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes "
                                          "(server.max_body_bytes)")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"no byte of the request body arrived for {idle:g}s after "
                          f"{size} bytes (server.body_timeout_s); send the whole body "
                          "promptly") from None
    return b"".join(chunks)
