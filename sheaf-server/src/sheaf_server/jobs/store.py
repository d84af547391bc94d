"""Jobs in Redis: what is kept where, and every change of a job's state as one Lua script,
so that two workers, a server and a restart can never leave a job half-written.

Keys (PREFIX is `jobs.prefix`, default `sheaf`):

- `PREFIX:jobs:stream:MODEL` — a stream per model, read by the consumer group `workers`.
  An entry holds only the job id; it is deleted when its job is acknowledged, so the
  stream's length is the model's queue (waiting + running), bounded by `jobs.max_queued`.
  Deleting only entries the group has already delivered keeps Redis 7's consumer-group
  `lag` exact, which KEDA scales on.
- `PREFIX:job:ID` — a hash: model, status, timestamps, attempts, the request body until the
  job finishes, then the result (or its URL) or the error. It expires `jobs.result_ttl_s`
  after the job finishes.
- `PREFIX:jobs:recent` — a sorted set of job ids by submit time (`GET /jobs`), trimmed by
  `jobs.retention`.
- `PREFIX:jobs:idem:DIGEST` — an Idempotency-Key's first job id, for `result_ttl_s`.
- `PREFIX:jobs:dead` — the dead-letter stream: jobs that failed `max_attempts` times or
  were abandoned that often, with the last error.

Exactly-once results: a job's result is written by `complete`, which refuses a job that is
already finished — a second worker that ran the same job (it was reclaimed while the first
was stalled) finds it done and only acknowledges its entry.

The redis client sends a command again when a connection drops before its reply; the
scripts that must not act twice recognise their own second call: `submit` by the job id it
made before calling, `complete` by the run (worker and attempt) it names.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from sheaf_core.codecs import JSON_MEDIA_TYPE, is_json
from sheaf_core.errors import FieldProblem, InvalidRequest
from sheaf_server.engine.errors import JobConflict, JobNotFound, JobsUnavailable, overloaded
from sheaf_server.jobs.keys import GROUP, Keys, redis_url
from sheaf_server.settings import JobSettings

#: Job ids: 24 random bytes (192 bits), URL-safe; anything else is never looked up.
ID_BYTES = 24
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def new_job_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def valid_job_id(job_id: str) -> bool:
    return 16 <= len(job_id) <= 64 and set(job_id) <= ID_CHARS


@dataclass
class Job:
    """A job as the status route shows it (`view`) and a worker runs it."""

    id: str
    model: str
    status: JobStatus
    created_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    request_id: str | None = None
    media_type: str = "application/json"
    owner: str | None = None
    worker: str | None = None  # the worker running it (or that ran it last)
    body: bytes | None = None
    progress: dict[str, Any] | None = None
    result: bytes | None = None
    result_media_type: str | None = None
    result_url: str | None = None
    error: dict[str, Any] | None = None
    callback_url: str | None = None
    callback: str | None = None  # "delivered", or "failed: why"
    cancel_requested: bool = False

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> Job:
        text: dict[str, bytes] = {k.decode(): v for k, v in fields.items()}

        def s(name: str) -> str | None:
            value = text.get(name)
            return value.decode() if value is not None and value != b"" else None

        def f(name: str) -> float | None:
            value = s(name)
            return float(value) if value is not None else None

        def j(name: str) -> Any:
            value = s(name)
            return json.loads(value) if value is not None else None

        return cls(id=s("id") or "", model=s("model") or "",
                   status=JobStatus(s("status") or "queued"),
                   created_at=f("created_at") or 0.0, attempts=int(s("attempts") or 0),
                   started_at=f("started_at"), finished_at=f("finished_at"),
                   request_id=s("request_id"), media_type=s("media_type") or "application/json",
                   owner=s("owner"), worker=s("worker"), body=text.get("body"),
                   progress=j("progress"),
                   result=text.get("result"), result_media_type=s("result_media_type"),
                   result_url=s("result_url"), error=j("error"),
                   callback_url=s("callback_url"), callback=s("callback"),
                   cancel_requested=s("cancel") == "1")

    def document(self, *, with_result: bool = False) -> dict[str, Any]:
        """The job's status document — `GET /jobs/{id}` (`with_result`), each entry of
        `GET /jobs`, a callback's body: a JSON result inline when asked for, otherwise the
        URL that serves it (another format, or a listing)."""
        document = {
            "job_id": self.id, "model": self.model, "status": self.status.value,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at), "attempts": self.attempts,
            "worker": self.worker, "request_id": self.request_id, "progress": self.progress,
            "error": self.error, "result_url": self.result_url,
            "result_media_type": self.result_media_type,
            "cancel_requested": self.cancel_requested or None,
            "callback_url": self.callback_url, "callback": self.callback,
            "status_url": f"/jobs/{self.id}"}
        if self.result is not None:
            if with_result and is_json(self.result_media_type or JSON_MEDIA_TYPE):
                document["result"] = json.loads(self.result)
            else:
                document["result_url"] = f"/jobs/{self.id}/result"
        return document


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Claimed:
    """A stream entry a worker read, and what `claim` made of it."""

    outcome: str  # "run", "skip" (finished or gone: acknowledged), "dead" (dead-lettered)
    job: Job | None = None


# -- the scripts: each a whole state change, atomic in Redis --------------------------------

_TERMINAL = "local function finished(s) return s == 'succeeded' or s == 'failed' or " \
            "s == 'cancelled' end\n"

#: KEYS: stream, job, recent, idempotency key ("" for none).
#: ARGV: id, now, max_queued, ttl_ms, max_recent, min_recent_score, the body's digest, then
#: field pairs. The idempotency key holds "ID DIGEST" of the first submit.
_SUBMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then  -- this very call, sent again after a lost reply
  return {'queued', redis.call('HGET', KEYS[2], 'entry')}
end
if KEYS[4] ~= '' then
  local first = redis.call('GET', KEYS[4])
  if first then return {'existing', first} end
end
local queued = redis.call('XLEN', KEYS[1])
if queued >= tonumber(ARGV[3]) then return {'full', tostring(queued)} end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'status', 'queued', 'created_at', ARGV[2],
           'attempts', 0, unpack(fields))
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'entry', entry)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[6])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. ARGV[7], 'PX', ARGV[4]) end
return {'queued', entry}
"""

#: A worker read an entry: run it, skip it, or dead-letter it (started too often).
#: KEYS: job, stream, dead. ARGV: entry, group, worker, now, max_attempts, ttl_ms,
#: dead_maxlen, streams (1: the model streams; the job can be cancelled while running).
_CLAIM = _TERMINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or finished(status) then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
  return {'skip'}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[5]) then
  local err = cjson.encode({error = 'job_abandoned', status = 500,
    message = 'the job was started ' .. (attempts - 1) .. ' times and no worker finished ' ..
              'it (each stopped or died while running it); it is in the dead-letter stream'})
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[4], 'error', err,
             'attempts', attempts - 1)
  redis.call('HDEL', KEYS[1], 'body')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'job', redis.call('HGET', KEYS[1], 'id'),
             'model', redis.call('HGET', KEYS[1], 'model'), 'attempts', attempts - 1,
             'error', err, 'failed_at', ARGV[4])
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
  return {'dead'}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[3], 'entry', ARGV[1],
           'streams', ARGV[8])
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[4])
end
return {'run'}
"""

#: The job finished (succeeded, or failed for good): written once. A job already finished
#: (another worker's duplicate run, or cancelled) is left as it is.
#: KEYS: job, stream, dead. ARGV: entry, group, status, now, ttl_ms, dead (1: also
#: dead-letter it), dead_maxlen, run (worker and attempt: the same call sent again after a
#: lost reply finds its own result and says so), then field pairs.
_COMPLETE = _TERMINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
if (not status) or finished(status) then
  if redis.call('HGET', KEYS[1], 'finished_by') == ARGV[8] then return 1 end
  return 0
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', ARGV[4], 'finished_by', ARGV[8],
           unpack(fields))
redis.call('HDEL', KEYS[1], 'body', 'cancel')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'job', redis.call('HGET', KEYS[1], 'id'),
             'model', redis.call('HGET', KEYS[1], 'model'),
             'attempts', redis.call('HGET', KEYS[1], 'attempts'),
             'error', redis.call('HGET', KEYS[1], 'error') or '', 'failed_at', ARGV[4])
end
return 1
"""

#: A run failed and will be tried again: back to queued (the entry stays with this worker,
#: which retries after a backoff; if it dies, the entry is reclaimed).
#: KEYS: job. ARGV: error JSON.
_RETRY = _TERMINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or finished(status) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'last_error', ARGV[1])
return 1
"""

#: A worker gives a job back (it is stopping): the attempt is not counted, the entry is
#: replaced by a new one any worker reads next. KEYS: job, stream. ARGV: entry, group.
_RELEASE = _TERMINAL + """
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or finished(status) then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job', redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'entry', entry)
redis.call('HDEL', KEYS[1], 'worker')
return 1
"""

#: KEYS: job. ARGV: now, ttl_ms. → the status it had; a queued job is cancelled, a running
#: one that streams is asked to stop at its next step.
_CANCEL = _TERMINAL + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'body')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'cancelled'}
end
if status == 'running' then
  if redis.call('HGET', KEYS[1], 'streams') == '1' then
    redis.call('HSET', KEYS[1], 'cancel', '1')
    return {'cancelling'}
  end
  return {'running'}
end
return {status}
"""

#: KEYS: job. ARGV: progress JSON. → whether the job was asked to stop.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
return 0
"""


def unavailable(exc: Exception) -> JobsUnavailable:
    """Redis away (or loading its data after a restart, or out of memory): a 503 the caller
    retries; the message says which."""
    if isinstance(exc, redis_errors.BusyLoadingError):
        why = "Redis is loading its data after a restart"
    elif isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("OOM"):
        why = "Redis is out of memory (maxmemory; use maxmemory-policy noeviction)"
    else:
        why = "Redis cannot be reached"
    return JobsUnavailable(f"the job queue is unavailable: {why}; try again shortly",
                           retry_after=2)


#: What `guard` turns into a 503: connection trouble, a Redis loading or full, a failover.
TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError,
             redis_errors.ReadOnlyError, redis_errors.TryAgainError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (
        isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(("OOM", "LOADING")))


@asynccontextmanager
async def guard() -> AsyncIterator[None]:
    """Redis's transient failures as `JobsUnavailable` (503 + Retry-After), never a 500."""
    try:
        yield
    except redis_errors.RedisError as exc:
        if is_transient(exc):
            raise unavailable(exc) from None
        raise


@dataclass
class Submitted:
    job_id: str
    created: bool  # False: an Idempotency-Key found the first submit's job


@dataclass
class JobStore:
    """The jobs of one deployment (`jobs.prefix`) in one Redis."""

    settings: JobSettings
    client: aioredis.Redis = field(init=False)
    keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self.client = aioredis.Redis.from_url(
            redis_url(self.settings), socket_connect_timeout=2, socket_timeout=10,
            health_check_interval=15, retry_on_timeout=False)
        self.keys = Keys(self.settings.prefix)
        self._submit = self.client.register_script(_SUBMIT)
        self._claim = self.client.register_script(_CLAIM)
        self._complete = self.client.register_script(_COMPLETE)
        self._retry = self.client.register_script(_RETRY)
        self._release = self.client.register_script(_RELEASE)
        self._cancel = self.client.register_script(_CANCEL)
        self._progress = self.client.register_script(_PROGRESS)
        self._groups: set[str] = set()

    async def close(self) -> None:
        await self.client.aclose()

    def forget_groups(self) -> None:
        """The groups known to exist are created again on next use (Redis lost them)."""
        self._groups.clear()

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.result_ttl_s * 1000)

    async def ensure_group(self, model: str) -> None:
        """The model's stream and its consumer group (from the stream's start, so jobs
        submitted before any worker ran are read)."""
        if model in self._groups:
            return
        try:
            await self.client.xgroup_create(self.keys.stream(model), GROUP, id="0",
                                            mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(model)

    # -- the server's side ---------------------------------------------------------------

    async def submit(self, model: str, body: bytes, *, media_type: str, owner: str,
                     request_id: str | None, callback_url: str | None = None,
                     idempotency_key: str | None = None) -> Submitted:
        """Queue a job (already validated by the caller); with an Idempotency-Key, the job
        the first submit with that key made, if any. 503 when the model's queue is full."""
        job_id = new_job_id()
        now = time.time()
        retention = self.settings.retention
        fields: dict[str, str | bytes] = {"model": model, "body": body,
                                          "media_type": media_type, "owner": owner}
        if request_id:
            fields["request_id"] = request_id
        if callback_url:
            fields["callback_url"] = callback_url
        idem = self.keys.idempotency(owner, idempotency_key) if idempotency_key else ""
        digest = hashlib.sha256(body).hexdigest() if idempotency_key else ""  # keyed only
        async with guard():
            await self.ensure_group(model)
            outcome, value = await self._submit(
                keys=[self.keys.stream(model), self.keys.job(job_id), self.keys.recent, idem],
                args=[job_id, repr(now), self.settings.max_queued, self.ttl_ms,
                      retention.max_len, repr(now - retention.max_age_s), digest,
                      *[x for pair in fields.items() for x in pair]])
        outcome = outcome.decode()
        if outcome == "existing":
            first, _, first_digest = value.decode().partition(" ")
            if first_digest != digest:
                raise InvalidRequest(FieldProblem(
                    "Idempotency-Key", f"already used for job {first} with a different "
                    "request body; send a new key with a new request"),
                    message="the Idempotency-Key was used for another request")
            return Submitted(first, created=False)
        if outcome == "full":
            raise overloaded(f"jobs of model {model!r}", f"{value.decode()} jobs are queued "
                             "or running: jobs.max_queued", 5)
        return Submitted(job_id, created=True)

    async def get(self, job_id: str) -> Job:
        if not valid_job_id(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        async with guard():
            fields = await self.client.hgetall(self.keys.job(job_id))
        if not fields:
            raise JobNotFound(f"no job {job_id!r} (unknown, or finished more than "
                              f"{self.settings.result_ttl_s:g} s ago: jobs.result_ttl_s)")
        return Job.from_hash(fields)

    async def cancel(self, job_id: str) -> str:
        """Cancel a queued job, or ask a running streamed one to stop. Returns
        "cancelled" or "cancelling"; 409 for a finished job or one that cannot stop."""
        job = await self.get(job_id)
        async with guard():
            (outcome,) = await self._cancel(keys=[self.keys.job(job_id)],
                                            args=[repr(time.time()), self.ttl_ms])
        outcome = outcome.decode()
        if outcome in ("cancelled", "cancelling"):
            return outcome
        if outcome == "missing":
            raise JobNotFound(f"no job {job_id!r}")
        if outcome == "running":
            raise JobConflict(f"job {job_id!r} is running and model {job.model!r} does not "
                              "stream, so it cannot be stopped part-way; its result will "
                              "be kept as usual")
        raise JobConflict(f"job {job_id!r} has already finished ({outcome})")

    async def recent(self, *, model: str | None = None, status: JobStatus | None = None,
                     owner: str | None = None, limit: int = 50) -> list[Job]:
        """The most recent jobs first, filtered; reads at most 20 * `limit` ids."""
        found: list[Job] = []
        async with guard():
            ids = cast(list[bytes], await self.client.zrevrange(self.keys.recent, 0,
                                                                limit * 20 - 1))
            for start in range(0, len(ids), 200):
                chunk = ids[start:start + 200]
                pipe = self.client.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hgetall(self.keys.job(job_id.decode()))
                for fields in await pipe.execute():
                    if not fields:
                        continue  # expired
                    job = Job.from_hash(fields)
                    if ((model is None or job.model == model)
                            and (status is None or job.status is status)
                            and (owner is None or job.owner == owner)):
                        found.append(job)
                        if len(found) >= limit:
                            return found
        return found

    async def queued(self, model: str) -> int:
        async with guard():
            return int(await self.client.xlen(self.keys.stream(model)))

    async def ping(self) -> None:
        async with guard():
            await self.client.ping()

    # -- the worker's side ---------------------------------------------------------------

    async def read(self, models: Sequence[str], worker: str, count: int,
                   block_ms: int, *, own: bool = False) -> list[tuple[str, str, str]]:
        """New entries for this worker: (model, entry id, job id). `own`: instead, the
        entries already delivered to this worker and not acknowledged — those whose
        delivery reply a dropped connection lost (Redis recorded them as this worker's, the
        worker never saw them)."""
        streams: dict[Any, Any] = {self.keys.stream(m): "0" if own else ">" for m in models}
        replies = await self.client.xreadgroup(GROUP, worker, streams, count=count,
                                               block=None if own else block_ms)
        return self._entries(models, replies)

    async def reclaim(self, model: str, worker: str, idle_ms: int,
                      count: int) -> list[tuple[str, str, str]]:
        """Entries of `model` another worker read and has not touched for `idle_ms`."""
        reply = await self.client.xautoclaim(self.keys.stream(model), GROUP, worker,
                                             idle_ms, "0-0", count=count)
        entries = reply[1]
        return [(model, entry.decode(), data[b"job"].decode())
                for entry, data in entries if data and b"job" in data]

    async def renew(self, model: str, worker: str, entries: Sequence[str]) -> None:
        """Reset the idle time of entries this worker is running, so none is reclaimed
        while it works on it (a heartbeat)."""
        if entries:
            await self.client.xclaim(self.keys.stream(model), GROUP, worker, 0,
                                     list(entries), justid=True)

    def _entries(self, models: Sequence[str], replies: Any) -> list[tuple[str, str, str]]:
        by_stream = {self.keys.stream(m): m for m in models}
        out: list[tuple[str, str, str]] = []
        for stream, entries in replies or []:
            model = by_stream[stream.decode()]
            for entry, data in entries:
                if data and b"job" in data:
                    out.append((model, entry.decode(), data[b"job"].decode()))
        return out

    async def claim(self, model: str, entry: str, job_id: str, worker: str, *,
                    streams: bool) -> Claimed:
        (outcome, *_) = await self._claim(
            keys=[self.keys.job(job_id), self.keys.stream(model), self.keys.dead],
            args=[entry, GROUP, worker, repr(time.time()), self.settings.max_attempts,
                  self.ttl_ms, self.settings.retention.max_len, "1" if streams else "0"])
        outcome = outcome.decode()
        if outcome != "run":
            return Claimed(outcome)
        fields = await self.client.hgetall(self.keys.job(job_id))
        return Claimed("run", Job.from_hash(fields))

    async def complete(self, model: str, entry: str, job_id: str, status: JobStatus,
                       fields: Mapping[str, str | bytes], *, dead: bool = False,
                       run: str = "") -> bool:
        """Write a finished job once; False when it had already finished (left as it was).
        `run` names this run (worker, attempt)."""
        written = await self._complete(
            keys=[self.keys.job(job_id), self.keys.stream(model), self.keys.dead],
            args=[entry, GROUP, status.value, repr(time.time()), self.ttl_ms,
                  "1" if dead else "0", self.settings.retention.max_len,
                  run or secrets.token_hex(8),
                  *[x for pair in fields.items() for x in pair]])
        return bool(written)

    async def retry_later(self, job_id: str, error: Mapping[str, Any]) -> bool:
        return bool(await self._retry(keys=[self.keys.job(job_id)],
                                      args=[json.dumps(error)]))

    async def release(self, model: str, entry: str, job_id: str) -> None:
        await self._release(keys=[self.keys.job(job_id), self.keys.stream(model)],
                            args=[entry, GROUP])

    async def progress(self, job_id: str, progress: Mapping[str, Any]) -> bool:
        """Record a running job's progress; True when it was asked to stop."""
        return bool(await self._progress(keys=[self.keys.job(job_id)],
                                         args=[json.dumps(progress)]))

    async def forget_worker(self, models: Sequence[str], worker: str) -> None:
        """Remove a stopped worker's consumer from each group — only where it holds no
        entry (a consumer's pending entries would be lost with it)."""
        for model in models:
            pending = await self.client.xpending_range(self.keys.stream(model), GROUP,
                                                       "-", "+", 1, consumername=worker)
            if not pending:
                await self.client.xgroup_delconsumer(self.keys.stream(model), GROUP, worker)

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        async with guard():
            entries = cast(list[Any], await self.client.xrevrange(self.keys.dead,
                                                                  count=count))
        return [{k.decode(): v.decode() for k, v in data.items()} for _, data in entries]
