"""`SheafWorker`: reads jobs from the models' Redis streams and runs each through the
engine's request path — the same decode → features → cache → batch → backend → encode as
`POST /{name}/predict` — then writes the result once and acknowledges.

Several jobs run at once (`jobs.concurrency`), so jobs for one model batch together in the
model's batcher exactly as concurrent HTTP requests do. What keeps a job from being lost or
done twice:

- A job read is this worker's until it acknowledges it (the consumer group's pending
  list). While it runs, the worker renews it (`renew`, a heartbeat) so no other worker
  takes it; a worker that dies stops renewing, and after `jobs.visibility_timeout_s`
  another one reclaims it (XAUTOCLAIM) and runs it again.
- Every run counts an attempt. A run that fails with a 5xx (the backend raised, storage
  failed, the model was not ready) is retried after a backoff, up to `jobs.max_attempts`;
  then the job goes to the dead-letter stream, status failed with the last error. A 4xx
  (the request itself is wrong) fails at once. A job started `max_attempts` times that no
  worker ever finished (it kills its worker) is dead-lettered on the next read.
- The result is written by one script that refuses a job already finished, so a duplicate
  run (a stalled worker that was not dead) cannot overwrite it.
- Redis going away: the loops back off and retry; a finished job's result is written when
  Redis is back. SIGTERM: stop reading, finish what runs within `jobs.drain_timeout_s`,
  give the rest back to the queue (not counted as attempts), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from sheaf_core.errors import ConfigError, PayloadUnavailable
from sheaf_core.registry import Registry
from sheaf_server.asgi.errors import error_body
from sheaf_server.engine import Call, Engine, RequestError, status_of
from sheaf_server.engine.errors import BackendFailed
from sheaf_server.engine.runtime import ModelRuntime
from sheaf_server.engine.state import ModelState
from sheaf_server.jobs.callbacks import deliver
from sheaf_server.jobs.keys import redis_url
from sheaf_server.jobs.results import store_result
from sheaf_server.jobs.store import Job, JobStatus, JobStore, is_transient
from sheaf_server.settings import JobSettings, SheafConfig

log = logging.getLogger("sheaf.jobs")
T = TypeVar("T")
MAX_BACKOFF_S = 60.0
#: Least time between two progress writes of one job (a backend may report every step).
PROGRESS_INTERVAL_S = 0.25


@dataclass
class _Running:
    model: str
    entry: str
    task: asyncio.Task[None]


class SheafWorker:
    """One worker process: the models of `jobs.models` loaded here, their streams read."""

    def __init__(self, config: SheafConfig, *, registry: Registry | None = None,
                 plugins: Iterable[object] = (), name: str | None = None) -> None:
        if config.jobs is None:
            raise ConfigError("this config has no `jobs:` section: add one (e.g. `jobs: "
                              "{redis_url: redis://HOST:6379/0}`) so servers queue jobs "
                              "and workers know where to read them (docs/jobs.md)")
        self.settings: JobSettings = config.jobs
        served = [*(m.name for m in config.models), *(p.name for p in config.pipelines)]
        self.names = list(self.settings.models or served)
        pipelines = [p for p in config.pipelines if p.name in self.names]
        needed = set(self.names) | {n.model for p in pipelines for n in p.nodes.values()
                                    if n.model is not None}
        specs = [m for m in config.models if m.name in needed]
        self.engine = Engine(specs, config.server, registry, plugins, pipelines=pipelines)
        self.storage_options = config.server.payloads.storage_options
        self.store = JobStore(self.settings)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.running: dict[str, _Running] = {}
        self.finished = 0  # jobs this worker finished (any outcome), for its logs and tests
        self._stopping = asyncio.Event()
        self._slot = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # callbacks in flight
        self._troubles = 0  # Redis errors seen (a read then also looks at own entries)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; `run` then drains and returns (safe from a signal handler)."""
        self._stopping.set()
        self._slot.set()

    async def run(self) -> None:
        """Load the models, read and run jobs until `stop()`, then drain. Raises
        `RuntimeError` naming a model that failed to load."""
        await self.engine.start()
        try:
            await self.engine.wait_loaded()
            failed = [f"{n}: {m.reason}" for n, m in self.engine.models.items()
                      if m.state is not ModelState.READY]
            if failed:
                raise RuntimeError("models not loaded: " + "; ".join(failed))
            await self._until_redis(self._create_groups)
            log.info("worker %s: running jobs of %s from %s (concurrency %d)", self.name,
                     ", ".join(self.names), _safe_url(redis_url(self.settings)),
                     self.settings.concurrency)
            loops = [asyncio.create_task(self._forever(loop)) for loop in
                     (self._read_loop, self._reclaim_loop, self._renew_loop)]
            await self._stopping.wait()
            await self._drain()
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.store.forget_worker(self.names, self.name)
            if self._tasks:  # callbacks still being delivered: a little time, not forever
                await asyncio.wait(self._tasks, timeout=5)
        finally:
            # every job has finished or was given back by now: nothing left to wait for
            await self.engine.stop(drain_timeout_s=0)
            await self.store.close()
        log.info("worker %s: stopped after %d jobs", self.name, self.finished)

    async def _forever(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` until the worker stops; a defect in it is logged and the loop
        restarted (a worker that silently stopped reading would look alive)."""
        while True:
            try:
                await loop()
                return  # the read loop returns once the worker stops
            except Exception:
                log.exception("worker %s: %s failed; restarting it", self.name,
                              loop.__name__)
                await asyncio.sleep(1.0)

    async def _create_groups(self) -> None:
        for name in self.names:
            await self.store.ensure_group(name)

    async def _drain(self) -> None:
        """Finish running jobs within `drain_timeout_s`; give the rest back."""
        pending = [r.task for r in self.running.values()]
        if pending:
            log.info("worker %s: stopping; finishing %d running jobs (at most %g s)",
                     self.name, len(pending), self.settings.drain_timeout_s)
            _, left = await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
            for task in left:
                task.cancel()  # each gives its job back (`_job`)
            if left:
                await asyncio.wait(left, timeout=10)

    # -- the loops -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        own = True  # first, and after Redis trouble: entries delivered to us, never seen
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            per_stream = max(1, free // len(self.names))  # COUNT applies to each stream
            if own:  # every entry we hold: the running ones and any we never saw
                per_stream = len(self.running) + self.settings.concurrency
            troubles = self._troubles
            try:
                entries = await self._until_redis(
                    partial(self.store.read, self.names, self.name, per_stream,
                            block_ms=1000, own=own))
                if own:
                    entries = [e for e in entries or [] if e[2] not in self.running]
                    own = bool(entries)  # until none is left
                if self._troubles != troubles:
                    # a read whose reply a dropped connection lost may still have
                    # delivered entries to us: look at our own pending ones next
                    own = True
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost its data (restarted without an append-only file): the groups
                # are made again, from the start of whatever the streams now hold
                log.error("worker %s: the consumer groups are gone (Redis restarted "
                          "without its data?); creating them again", self.name)
                self.store.forget_groups()
                await self._until_redis(self._create_groups)
                continue
            for model, entry, job_id in entries or []:
                self._start(model, entry, job_id)

    async def _reclaim_loop(self) -> None:
        """Jobs of workers that stopped renewing them (killed, partitioned)."""
        timeout_ms = int(self.settings.visibility_timeout_s * 1000)
        every = max(0.5, min(self.settings.visibility_timeout_s / 2, 30.0))
        while True:
            await asyncio.sleep(every)
            for model in self.names:
                free = self.settings.concurrency - len(self.running)
                if free <= 0 or self._stopping.is_set():
                    break
                try:
                    entries = await self.store.reclaim(model, self.name, timeout_ms, free)
                except Exception as exc:
                    self._redis_trouble("reclaiming jobs", exc)
                    continue
                for model_name, entry, job_id in entries:
                    if job_id in self.running:  # ours: its renewal was late
                        continue
                    log.warning("worker %s: reclaimed job %s of model %r (its worker "
                                "stopped renewing it)", self.name, job_id, model_name)
                    self._start(model_name, entry, job_id)

    async def _renew_loop(self) -> None:
        every = max(0.2, min(self.settings.visibility_timeout_s / 3, 30.0))
        while True:
            await asyncio.sleep(every)
            by_model: dict[str, list[str]] = {}
            for running in list(self.running.values()):
                by_model.setdefault(running.model, []).append(running.entry)
            for model, entries in by_model.items():
                try:
                    await self.store.renew(model, self.name, entries)
                except Exception as exc:
                    self._redis_trouble("renewing running jobs", exc)

    def _start(self, model: str, entry: str, job_id: str) -> None:
        task = asyncio.create_task(self._job(model, entry, job_id))
        self.running[job_id] = _Running(model, entry, task)

        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(job_id, None)
            self._slot.set()

        task.add_done_callback(done)

    # -- one job ---------------------------------------------------------------------------

    async def _job(self, model: str, entry: str, job_id: str) -> None:
        target = self.engine.model(model)
        streams = self._streams(target)
        try:
            while True:
                claimed = await self._until_redis(
                    lambda: self.store.claim(model, entry, job_id, self.name,
                                             streams=streams))
                if claimed is None:  # stopping while Redis was away: reclaimed later
                    return
                if claimed.outcome == "dead":
                    log.error("job %s of model %r was started %d times without finishing; "
                              "moved to the dead-letter stream", job_id, model,
                              self.settings.max_attempts)
                    self.finished += 1
                    return
                if claimed.outcome != "run" or claimed.job is None:
                    return
                job = claimed.job
                status, fields, retryable = await self._execute(target, job, streams)
                if status is JobStatus.FAILED and retryable and \
                        job.attempts < self.settings.max_attempts:
                    delay = min(MAX_BACKOFF_S,
                                self.settings.retry_backoff_s * 2 ** (job.attempts - 1))
                    log.warning("job %s of model %r failed (attempt %d of %d): %s; trying "
                                "again in %.1f s", job_id, model, job.attempts,
                                self.settings.max_attempts, fields["error"], delay)
                    await self._until_redis(
                        partial(self.store.retry_later, job_id, json.loads(fields["error"])))
                    await asyncio.sleep(delay)
                    continue
                dead = status is JobStatus.FAILED and retryable
                written = await self._until_redis(
                    partial(self.store.complete, model, entry, job_id, status, fields,
                            dead=dead, run=f"{self.name}/{job.attempts}"))
                self.finished += 1
                if written is False:
                    log.info("job %s was already finished; this run's result is dropped",
                             job_id)
                elif written and job.callback_url:
                    self._callback(job)
                if dead:
                    log.error("job %s of model %r failed %d times; moved to the dead-letter "
                              "stream", job_id, model, job.attempts)
                return
        except asyncio.CancelledError:
            # stopping: give the job back (not counted as an attempt) for another worker
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release(model, entry, job_id))
            raise

    def _streams(self, target: object) -> bool:
        return (self.settings.stream_progress and isinstance(target, ModelRuntime)
                and target.backend.supports_streaming)

    async def _execute(self, target: Any, job: Job, streams: bool) -> tuple[
            JobStatus, dict[str, str | bytes], bool]:
        """Run the job through the request path: (status, fields to write, retryable)."""
        call = Call(job.model, job.request_id or job.id, job.body or b"",
                    media_type=job.media_type, budget_s=self.settings.job_timeout_s)
        try:
            if streams:
                outcome = await self._stream(target, job, call)
                if outcome is None:
                    return JobStatus.CANCELLED, {}, False
                body, media_type = outcome
            else:
                answer = await target.handle(call)
                body, media_type = answer.body, answer.media_type
        except RequestError as exc:
            error = {**error_body(exc, exc.request_id or call.request_id),
                     "status": status_of(exc)}
            return JobStatus.FAILED, {"error": json.dumps(error)}, status_of(exc) >= 500
        except Exception as exc:  # a defect of the worker, not of the job: try again
            log.exception("job %s of model %r: the worker failed running it", job.id,
                          job.model)
            failed = BackendFailed("the worker failed while running this job; the error is "
                                   "in the worker's log")
            error = {**error_body(failed, call.request_id), "status": 500}
            del exc
            return JobStatus.FAILED, {"error": json.dumps(error)}, True
        try:
            fields = await asyncio.to_thread(store_result, self.settings, job.id, body,
                                             media_type, self.storage_options)
        except Exception:  # storage away: the run is tried again, as a 502 would be
            log.exception("job %s: writing its result under %s failed", job.id,
                          self.settings.results_uri)
            stored = PayloadUnavailable("the result could not be written under "
                                        "jobs.results_uri; the error is in the worker's log")
            error = {**error_body(stored, call.request_id), "status": status_of(stored)}
            return JobStatus.FAILED, {"error": json.dumps(error)}, True
        return JobStatus.SUCCEEDED, fields, False

    async def _stream(self, target: Any, job: Job, call: Call) -> tuple[bytes, str] | None:
        """A streamed run: progress written as it comes (at most every 0.25 s), stopped at
        the next step when the job is cancelled. None when it was."""
        _, stream = await target.stream(call)
        last = 0.0
        async with contextlib.aclosing(stream.events()) as events:
            async for kind, data in events:
                if kind == "result":
                    return data.encode(), "application/json"
                now = time.monotonic()
                if now - last < PROGRESS_INTERVAL_S:
                    continue
                last = now
                try:
                    stop = await self.store.progress(job.id, json.loads(data))
                except Exception as exc:
                    self._redis_trouble("writing progress", exc)
                    continue
                if stop:
                    log.info("job %s cancelled while running; stopped at its next step",
                             job.id)
                    return None
        raise RuntimeError("the stream ended without a result")

    def _callback(self, job: Job) -> None:
        task = asyncio.create_task(deliver(self.store, self.settings, job.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Redis trouble -----------------------------------------------------------------

    async def _until_redis(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """`work()`, retried with backoff while Redis is away; None if the worker stops
        first."""
        delay = 0.1
        while True:
            try:
                return await work()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._redis_trouble("waiting for Redis", exc)
            if self._stopping.is_set() and delay >= 1.6:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _redis_trouble(self, what: str, exc: Exception) -> None:
        self._troubles += 1
        if is_transient(exc):
            log.warning("worker %s: Redis unavailable while %s (%s); retrying", self.name,
                        what, type(exc).__name__)
        else:
            log.error("worker %s: %s failed", self.name, what, exc_info=exc)


def _safe_url(url: str) -> str:
    """A Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest



def run_worker(config: SheafConfig, *, plugins: Iterable[object] = ()) -> int:
    """`sheaf-server worker`: run until SIGTERM/SIGINT, then drain. Exit codes: 0 stopped,
    3 a model failed to load."""
    worker = SheafWorker(config, plugins=plugins)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        log.error("worker %s: %s", worker.name, exc)
        return 3
    return 0
