"""The Redis names of a deployment's jobs — shared by the store, the worker and the
manifests `sheaf-server build` writes (KEDA reads the streams by these names), and free of
the redis client so that building manifests does not need it.

Every key carries `{prefix}`, a Redis Cluster hash tag: the store's scripts touch several
keys at once, and a cluster allows that only within one slot."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from sheaf_server.settings import JobSettings

#: The consumer group every worker reads through.
GROUP = "workers"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "SHEAF_REDIS_URL"


def redis_url(settings: JobSettings) -> str:
    """`jobs.redis_url`, else $SHEAF_REDIS_URL, else a Redis on this machine."""
    return settings.redis_url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


@dataclass
class Keys:
    prefix: str

    def __post_init__(self) -> None:
        self.prefix = "{" + self.prefix + "}"

    def stream(self, model: str) -> str:
        """A model's job stream: one entry per job waiting or running."""
        return f"{self.prefix}:jobs:stream:{model}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def recent(self) -> str:
        return f"{self.prefix}:jobs:recent"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:jobs:dead"

    def idempotency(self, owner: str, key: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return f"{self.prefix}:jobs:idem:{digest}"
