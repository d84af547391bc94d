"""Callbacks: a finished job's status (with its result) POSTed to the `callback_url` its
submit named. Off unless `jobs.callbacks_allowed_prefixes` lists where callbacks may go;
never to a loopback, private, link-local or reserved address (a server's way into its own
network) unless `jobs.callbacks_allow_private` — checked when the job is submitted and
again, on the resolved address, when the callback is sent (a name may resolve elsewhere
by then). Delivery is retried with backoff (`jobs.callback_attempts`); the outcome is kept
in the job's status (`callback`). Redirects are not followed."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sheaf_core.errors import FieldProblem, InvalidRequest
from sheaf_server.settings import JobSettings

if TYPE_CHECKING:
    from sheaf_server.jobs.store import JobStore

log = logging.getLogger("sheaf.jobs")
FIELD = "callback_url"


def check_callback(url: str, settings: JobSettings) -> str:
    """`url` if callbacks may go there, else a 422 naming `callback_url` and the setting."""
    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(FieldProblem(FIELD, why), message="the callback is not allowed")

    allowed = settings.callbacks_allowed_prefixes
    if not allowed:
        raise refuse("callbacks are off on this server: jobs.callbacks_allowed_prefixes "
                     "lists none; poll GET /jobs/{id} instead")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse("expected an http:// or https:// URL")
    if not any(url.startswith(prefix) for prefix in allowed):
        raise refuse(f"not under jobs.callbacks_allowed_prefixes ({', '.join(allowed)})")
    if not settings.callbacks_allow_private:
        private = _private_address(parts.hostname)
        if private:
            raise refuse(f"{parts.hostname} is a private address ({private}); set "
                         "jobs.callbacks_allow_private to allow it")
    return url


def _private_address(host: str) -> str | None:
    """The first loopback/private/link-local/reserved address `host` resolves to, if any
    (a name that does not resolve is refused when the callback is sent)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (address.is_private or address.is_loopback or address.is_link_local
                or address.is_reserved or address.is_multicast or address.is_unspecified):
            return str(address)
    return None


async def deliver(store: JobStore, settings: JobSettings, job_id: str) -> bool:
    """POST the finished job to its callback URL, retrying; records the outcome."""
    import httpx

    job = await store.get(job_id)
    url = job.callback_url
    if not url:
        return False
    outcome = "failed"
    body = json.dumps(job.document(with_result=True)).encode()
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        for attempt in range(1, settings.callback_attempts + 1):
            try:
                check_callback(url, settings)
                reply = await client.post(url, content=body, headers={
                    "Content-Type": "application/json", "Sheaf-Job-Id": job_id})
                if 200 <= reply.status_code < 300:
                    outcome = "delivered"
                    break
                why = f"HTTP {reply.status_code}"
            except InvalidRequest as exc:
                why = exc.problems[0].message
                break
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            log.warning("callback of job %s to %s failed (%s), attempt %d of %d", job_id, url,
                        why, attempt, settings.callback_attempts)
            await asyncio.sleep(min(30.0, settings.retry_backoff_s * 2 ** (attempt - 1)))
        if outcome == "failed":
            outcome = f"failed: {why}"
    await store.client.hset(store.keys.job(job_id), "callback", outcome)
    return outcome == "delivered"
