"""Asynchronous jobs on Redis Streams (docs/jobs.md): `POST /{name}/jobs` on either host
queues a checked request; `sheaf-server worker` (`SheafWorker`) runs it through the same
request path as /predict and keeps its result; KEDA scales the workers on the queue.

Needs `pip install 'sheaf-server[jobs]'` (the redis client)."""

from sheaf_server.jobs.store import Job, JobStatus, JobStore
from sheaf_server.jobs.worker import SheafWorker

__all__ = ["Job", "JobStatus", "JobStore", "SheafWorker"]
