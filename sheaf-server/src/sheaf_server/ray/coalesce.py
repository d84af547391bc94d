"""Requests for one model that reach an ingress replica together travel to a model replica
in one handle call.

Each Ray handle call costs a round of routing, gRPC and task scheduling on both sides; at
dozens of concurrent clients that, not the model, bounds throughput. The `Coalescer` sends
what arrived within one turn of the event loop as a single `handle_many` call — it never
waits for more — and the model replica runs every item through the engine's request path,
where they batch as usual. A lone request goes as a plain `handle` call, so cancelling it
(a client that disconnects) still reaches the replica and drops it before it runs; an item
of a shared call is only abandoned at the ingress (the replica may still compute it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from ray.serve.handle import DeploymentHandle

from sheaf_server.engine.errors import EngineError
from sheaf_server.ray.remote_calls import CallMeta, Outcome, call_replica, call_replica_many


@dataclass(eq=False, slots=True)
class _Item:
    body: bytes | str
    request_id: str
    body_id_wins: bool
    budget: float
    meta: CallMeta
    future: asyncio.Future[Outcome]


class Coalescer:
    def __init__(self, handle: DeploymentHandle, name: str) -> None:
        self.handle = handle
        self.name = name
        self._pending: list[_Item] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: calls sent, and items they carried (GET /models/NAME → ingress)
        self.calls = 0
        self.items = 0

    async def call(self, body: bytes | str, request_id: str, body_id_wins: bool,
                   budget: float, meta: CallMeta) -> Outcome:
        loop = asyncio.get_running_loop()
        item = _Item(body, request_id, body_id_wins, budget, meta, loop.create_future())
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(item)
        return await item.future

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        items = [item for item in items if not item.future.done()]
        if not items:
            return
        self.calls += 1
        self.items += len(items)
        task = asyncio.get_running_loop().create_task(self._send(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def abandoned(_: asyncio.Future[Outcome]) -> None:
            if all(item.future.done() for item in items) and not task.done():
                task.cancel()  # Ray cancels the call in the replica too

        for item in items:
            item.future.add_done_callback(abandoned)

    async def _send(self, items: list[_Item]) -> None:
        try:
            if len(items) == 1:
                one = items[0]
                outcomes: list[Outcome] = [await call_replica(
                    self.handle, self.name, one.body, one.request_id, one.body_id_wins,
                    one.budget, one.meta)]
            else:
                outcomes = await call_replica_many(
                    self.handle, self.name,
                    [(i.body, i.request_id, i.body_id_wins, i.budget, i.meta)
                     for i in items])
        except (EngineError, asyncio.CancelledError) as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc if isinstance(exc, EngineError)
                                              else asyncio.CancelledError())
            return
        for item, outcome in zip(items, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
