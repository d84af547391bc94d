"""An asyncio dynamic batcher: one per model, shared by every host that serves it.

Requests wait in per-bucket queues (`bucket_by` keys: only equal keys share a batch). A batch
leaves when it is full, when its oldest request has waited `max_wait_ms`, or — because a
worker slot is taken before the batch is chosen — whatever accumulated while the backend was
busy. The queue is bounded: past `max_queue_size` a submit fails at once with `Overloaded`
and a Retry-After estimate, never an unbounded wait. Batches run in a thread pool, off the
event loop. A request whose caller gave up (deadline, disconnect) before dispatch is dropped;
a batch runs `running_until` the latest deadline of its requests, so a backend that checks
(`sheaf_core.deadlines`) stops once every caller has had its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from opentelemetry.trace import SpanContext

from sheaf_core.deadlines import running_until
from sheaf_core.spec import BatchingPolicy
from sheaf_server.engine import tracing
from sheaf_server.engine.errors import ShuttingDown, overloaded, past_deadline
from sheaf_server.engine.metrics import ModelMetrics

#: Runs one batch in a worker thread: a result or an exception per request, in order.
BatchFn = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass(eq=False, slots=True)
class _Item:
    request: Any
    future: asyncio.Future[Any]
    enqueued: float
    deadline: float  # loop time
    #: the request's span and when it was queued (wall-clock ns), if it is traced
    traced: tuple[SpanContext, int] | None


@dataclass
class BatcherStats:
    """Counters a test or a metrics exporter can read."""

    batch_sizes: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    rejected: int = 0
    batch_seconds: float = 0.01  # running estimate, used for Retry-After

    def summary(self, queued: int) -> dict[str, Any]:
        """Counters as JSON: what a client reads to see whether batches really form."""
        batches = sum(self.batch_sizes.values())
        requests = sum(size * count for size, count in self.batch_sizes.items())
        return {
            "queued": queued,
            "batches": batches,
            "requests": requests,
            "mean_batch_size": round(requests / batches, 2) if batches else None,
            "max_batch_size": max(self.batch_sizes, default=None),
            "dropped": self.dropped,
            "rejected": self.rejected,
            "recent_batch_ms": round(self.batch_seconds * 1000, 2),
        }


class DynamicBatcher:
    """Collects requests into batches for `run_batch` according to a `BatchingPolicy`."""

    def __init__(self, name: str, run_batch: BatchFn, policy: BatchingPolicy,
                 stats: BatcherStats | None = None) -> None:
        """`stats`: counters to carry on (a hot swap replaces the batcher, not the model)."""
        self.name = name
        self.policy = policy
        self._run_batch = run_batch
        self._max_size = policy.max_batch_size if policy.enabled else 1
        self._max_wait = policy.max_wait_ms / 1000 if policy.enabled else 0.0
        self._max_queue = policy.max_queue_size
        self._bucket_by = tuple(policy.bucket_by) if policy.enabled else ()
        self._workers = policy.max_concurrent_batches
        self._buckets: OrderedDict[Hashable, deque[_Item]] = OrderedDict()
        self._queued = 0
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closing = False
        self.stats = stats or BatcherStats()
        self.metrics = ModelMetrics(name)

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"sheaf-{self.name}")
        self._slots = asyncio.Semaphore(self._workers)
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())

    def bucket_key(self, request: Any) -> Hashable:
        if getattr(request, "batch_alone", False):  # e.g. a streamed request
            return ("alone", id(request))
        if not self._bucket_by:
            return None
        return tuple(_hashable(getattr(request, name, None)) for name in self._bucket_by)

    async def submit(self, request: Any, deadline: float) -> Any:
        """Queue `request`; return its result or raise its exception. `deadline`: loop time."""
        return await self.outcome(self.enqueue(request, deadline), deadline)

    def enqueue(self, request: Any, deadline: float) -> asyncio.Future[Any]:
        """Queue `request` now (or refuse it: overload, shutdown); its future answers it.
        Split from `submit` for callers that must know it was accepted before awaiting."""
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry on another replica",
                               retry_after=1)
        if self._queued >= self._max_queue:
            self.stats.rejected += 1
            raise overloaded(f"model {self.name!r}", f"{self._queued} requests queued: its "
                             "batching.max_queue_size", self._retry_after())
        loop = asyncio.get_running_loop()
        parent = tracing.current_parent()
        item = _Item(request, loop.create_future(), loop.time(), deadline,
                     None if parent is None else (parent, time.time_ns()))
        key = self.bucket_key(request)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = deque()
        bucket.append(item)
        self._queued += 1
        self.metrics.queue_depth.inc()
        self._wake()
        return item.future

    async def outcome(self, future: asyncio.Future[Any], deadline: float) -> Any:
        """The result of an enqueued request, or DeadlineExceeded at `deadline` (loop time);
        cancelling this drops the request if it has not run yet."""
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            raise past_deadline(f"model {self.name!r}") from None

    async def close(self, drain_timeout: float) -> None:
        """Refuse new work, finish what is queued and running (up to `drain_timeout`)."""
        self._closing = True
        self._wake()
        if self._loop_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._loop_task), drain_timeout)
            self._loop_task.cancel()
        for bucket in self._buckets.values():
            self.metrics.queue_depth.dec(len(bucket))
            for item in bucket:
                if not item.future.done():
                    item.future.set_exception(ShuttingDown("the server shut down before this "
                                                           "request ran", retry_after=1))
        self._buckets.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _retry_after(self) -> float:
        batches_ahead = math.ceil(self._queued / self._max_size) / self._workers
        return max(1.0, math.ceil(batches_ahead * self.stats.batch_seconds))

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._slots is not None
        while True:
            await self._slots.acquire()
            batch = await self._next_batch(loop)
            if batch is None:  # closing and nothing left
                self._slots.release()
                await asyncio.gather(*self._running, return_exceptions=True)
                return
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Item] | None:
        while True:
            now = loop.time()
            due: float | None = None
            for key, bucket in self._buckets.items():
                self._drop_abandoned(bucket)
                if not bucket:
                    continue
                ready_at = bucket[0].enqueued + self._max_wait
                if len(bucket) >= self._max_size or ready_at <= now or self._closing:
                    return self._take(key, bucket)
                due = ready_at if due is None else min(due, ready_at)
            self._prune()
            if self._closing and not self._buckets:
                return None
            self._wakeup = loop.create_future()
            try:
                if due is None:
                    await self._wakeup
                else:
                    async with asyncio.timeout_at(due):
                        await self._wakeup
            except TimeoutError:
                pass
            finally:
                self._wakeup = None

    def _drop_abandoned(self, bucket: deque[_Item]) -> None:
        while bucket and bucket[0].future.done():
            bucket.popleft()
            self._queued -= 1
            self.metrics.queue_depth.dec()
            self.stats.dropped += 1

    def _take(self, key: Hashable, bucket: deque[_Item]) -> list[_Item]:
        batch: list[_Item] = []
        while bucket and len(batch) < self._max_size:
            item = bucket.popleft()
            self._queued -= 1
            self.metrics.queue_depth.dec()
            if item.future.done():  # cancelled by its caller: deadline or disconnect
                self.stats.dropped += 1
                continue
            batch.append(item)
        if not bucket:
            del self._buckets[key]
        else:  # fairness: a bucket that just sent a batch goes to the back
            self._buckets.move_to_end(key)
        return batch

    def _prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if not b]:
            del self._buckets[key]

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        if not batch:
            self._slots.release()
            return
        self.stats.batch_sizes[len(batch)] += 1
        started = loop.time()
        metrics = self.metrics
        metrics.batch_size.observe(len(batch))
        for item in batch:
            metrics.queue_wait.observe(started - item.enqueued)
        # The batch's deadline on the worker's clock: by then every caller had its answer.
        until = time.monotonic() + max(item.deadline for item in batch) - started
        try:
            traced = [item.traced for item in batch if item.traced is not None]
            results = await loop.run_in_executor(
                self._executor, tracing.traced_batch, self.name, traced, len(batch),
                partial(_run_until, until, self._run_batch, [item.request for item in batch]))
        except BaseException as exc:
            results = [exc] * len(batch)
        finally:
            # Free the slot before answering: the dispatcher's wake-up is then queued ahead
            # of the callers', so the next batch starts before this one's responses are
            # encoded and written, and the backend does not idle meanwhile.
            self._slots.release()
        elapsed = loop.time() - started
        metrics.batch_seconds.observe(elapsed)
        self.stats.batch_seconds = 0.8 * self.stats.batch_seconds + 0.2 * elapsed
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)


def _run_until(until: float, run_batch: BatchFn, requests: Sequence[Any]) -> Sequence[Any]:
    """Worker thread: the batch, told its deadline (`sheaf_core.deadlines`)."""
    with running_until(until):
        return run_batch(requests)


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
