"""Asynchronous jobs on Redis Streams (docs/jobs.md): `POST /{name}/jobs` on either host
queues a checked request; `sheaf-server worker` (`SheafWorker`) runs it through the same
request path as /predict and keeps its result; KEDA scales the workers on the queue.

Needs `pip install 'sheaf-server[jobs]'` (the redis client). The names below are imported
on first use, so that `sheaf_server.jobs.keys` (what `sheaf-server build` reads) works
without it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sheaf_server.jobs.store import Job, JobStatus, JobStore
    from sheaf_server.jobs.worker import SheafWorker

__all__ = ["Job", "JobStatus", "JobStore", "SheafWorker"]


def __getattr__(name: str) -> Any:
    if name in ("Job", "JobStatus", "JobStore"):
        from sheaf_server.jobs import store

        return getattr(store, name)
    if name == "SheafWorker":
        from sheaf_server.jobs.worker import SheafWorker

        return SheafWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
