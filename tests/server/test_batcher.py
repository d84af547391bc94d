"""The dynamic batcher's rules, unit by unit, on an event loop whose clock the test moves:
when a batch leaves (full at once; a partial one after `max_wait_ms`, to the millisecond),
buckets, fairness between buckets, what accumulates while the backend is busy, overflow
answered at once with a Retry-After, requests abandoned before dispatch never reaching the
backend, deadlines, and a drain on close. No sleeps: the clock moves only when a test says."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from sheaf_core.spec import BatchingPolicy
from sheaf_server.engine.batcher import DynamicBatcher
from sheaf_server.engine.errors import DeadlineExceeded, Overloaded, ShuttingDown

T = TypeVar("T")


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is what the test set: timers fire when it advances."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def run(test: Callable[[], Awaitable[T]]) -> T:
    loop = ManualClockLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(test(), timeout=None))
    finally:
        loop.close()


async def settle() -> None:
    """Let every task runnable at the current time run (and timers due by now fire)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def advance(seconds: float) -> None:
    """Move the clock (tasks created but not yet run see the new time: settle first)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ManualClockLoop)
    loop.now += seconds
    await settle()


class Backend:
    """Records each batch it is given (request values); `gate` holds batches until set."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, requests: Sequence[Any]) -> list[Any]:
        self.gate.wait(timeout=30)
        self.batches.append([r.value for r in requests])
        return [r.value * 10 for r in requests]


def request(value: int, **fields: Any) -> SimpleNamespace:
    return SimpleNamespace(value=value, **fields)


def batcher(backend: Backend, **policy: Any) -> DynamicBatcher:
    started = DynamicBatcher("unit", backend, BatchingPolicy(**policy))
    started.start()
    return started


async def until(condition: Callable[[], bool]) -> None:
    """Wait for what a worker thread does (bounded): the loop wakes when it answers."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, lambda: None)
    raise AssertionError("the condition never held")


def far() -> float:
    return asyncio.get_running_loop().time() + 3600


def test_a_full_batch_leaves_at_once_without_waiting() -> None:
    async def scenario() -> None:
        backend = Backend()
        unit = batcher(backend, max_batch_size=4, max_wait_ms=10_000)
        results = await asyncio.gather(*(unit.submit(request(i), far()) for i in range(4)))
        assert results == [0, 10, 20, 30] and backend.batches == [[0, 1, 2, 3]]
        await unit.close(1)

    run(scenario)


def test_a_partial_batch_waits_max_wait_ms_to_the_millisecond() -> None:
    async def scenario() -> None:
        backend = Backend()
        unit = batcher(backend, max_batch_size=8, max_wait_ms=100)
        tasks = [asyncio.ensure_future(unit.submit(request(i), far())) for i in range(3)]
        await settle()  # queued now
        await advance(0.099)
        assert backend.batches == []  # 99 ms: still waiting for company
        await advance(0.002)
        await until(lambda: all(t.done() for t in tasks))
        assert backend.batches == [[0, 1, 2]]
        await unit.close(1)

    run(scenario)


def test_only_equal_bucket_keys_share_a_batch_and_buckets_take_turns() -> None:
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=2, max_wait_ms=0, bucket_by=["horizon"])
        first = asyncio.ensure_future(unit.submit(request(0, horizon=1), far()))
        await settle()  # the worker now holds [0]; what follows queues behind it
        tasks = [asyncio.ensure_future(unit.submit(request(v, horizon=h), far()))
                 for v, h in ((1, 1), (2, 1), (3, 1), (4, 1), (5, 2))]
        await settle()
        backend.gate.set()
        await until(lambda: first.done() and all(t.done() for t in tasks))
        # [1, 2] leaves first; then the horizon-2 bucket gets its turn before [3, 4]
        assert backend.batches == [[0], [1, 2], [5], [3, 4]]
        await unit.close(1)

    run(scenario)


def test_what_waited_while_the_backend_was_busy_leaves_as_soon_as_it_is_free() -> None:
    """Requests that arrive during a long batch have aged past `max_wait_ms` by the time a
    worker is free: they leave together at once, as one batch."""
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=16, max_wait_ms=20)
        first = [asyncio.ensure_future(unit.submit(request(i), far())) for i in range(16)]
        await settle()  # full: running at once
        later = [asyncio.ensure_future(unit.submit(request(i), far())) for i in range(16, 21)]
        await settle()  # queued behind the running batch
        await advance(0.050)  # the backend is still busy with the first batch
        assert backend.batches == []
        backend.gate.set()  # the clock does not move from here on
        await until(lambda: all(t.done() for t in first + later))
        assert backend.batches == [list(range(16)), list(range(16, 21))]
        await unit.close(1)

    run(scenario)


def test_overflow_is_refused_at_once_with_a_retry_after() -> None:
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=1, max_wait_ms=0, max_queue_size=2)
        running = asyncio.ensure_future(unit.submit(request(0), far()))
        await settle()  # taken by the worker: the queue is empty again
        queued = [asyncio.ensure_future(unit.submit(request(i), far())) for i in (1, 2)]
        await settle()
        with pytest.raises(Overloaded) as refused:
            unit.enqueue(request(3), far())
        assert refused.value.retry_after >= 1 and unit.stats.rejected == 1
        backend.gate.set()
        await until(lambda: running.done() and all(t.done() for t in queued))
        assert backend.batches == [[0], [1], [2]]
        await unit.close(1)

    run(scenario)


def test_a_request_abandoned_before_dispatch_never_reaches_the_backend() -> None:
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=4, max_wait_ms=0)
        running = asyncio.ensure_future(unit.submit(request(0), far()))
        await settle()
        gone = asyncio.ensure_future(unit.submit(request(1), far()))
        kept = asyncio.ensure_future(unit.submit(request(2), far()))
        await settle()
        gone.cancel()  # the client disconnected while queued
        await settle()
        backend.gate.set()
        await until(lambda: running.done() and kept.done())
        assert backend.batches == [[0], [2]] and unit.stats.dropped == 1
        await unit.close(1)

    run(scenario)


def test_a_deadline_answers_504_and_the_request_is_dropped_unrun() -> None:
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=4, max_wait_ms=0)
        running = asyncio.ensure_future(unit.submit(request(0), far()))
        await settle()
        loop = asyncio.get_running_loop()
        late = asyncio.ensure_future(unit.submit(request(1), loop.time() + 1.0))
        await advance(0.999)
        assert not late.done()
        await advance(0.002)
        with pytest.raises(DeadlineExceeded):
            await late
        backend.gate.set()
        await until(running.done)
        await settle()
        assert backend.batches == [[0]] and unit.stats.dropped == 1
        await unit.close(1)

    run(scenario)


def test_close_drains_what_was_accepted_and_refuses_what_comes_after() -> None:
    async def scenario() -> None:
        backend = Backend(gated=True)
        unit = batcher(backend, max_batch_size=2, max_wait_ms=10_000)
        accepted = [asyncio.ensure_future(unit.submit(request(i), far())) for i in range(3)]
        await settle()
        closing = asyncio.ensure_future(unit.close(30))
        await settle()
        with pytest.raises(ShuttingDown):
            unit.enqueue(request(9), far())
        backend.gate.set()
        await until(lambda: closing.done())
        assert [t.result() for t in accepted] == [0, 10, 20]  # none lost
        assert sorted(v for batch in backend.batches for v in batch) == [0, 1, 2]

    run(scenario)
