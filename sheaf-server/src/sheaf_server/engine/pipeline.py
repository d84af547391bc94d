"""A pipeline served like a model: one route, one typed request, one typed response, and
a DAG behind it — model nodes answer the request, combiner nodes merge their inputs.

Its request goes the one request path (`engine.request_path`: accept → respond → answer),
with the combiners' checks as its `prepare` step and its DAG (`run`) as its `respond`. The
model nodes are reached through `NodeCall`s — typed `Call`s into the model's own path, in
this process (tier 1) or in a model replica (Ray) — and run concurrently, each batched with
the model's other traffic.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, ClassVar, Protocol

from sheaf_core.codecs import PayloadSettings
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import InvalidRequest, RequestError
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec
from sheaf_core.registry import ContractEntry
from sheaf_server.engine import request_path
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import BackendFailed, past_deadline
from sheaf_server.engine.state import ModelState, ensure_serving

log = logging.getLogger("sheaf.engine")

#: A typed `Call` to a node's model → its typed response (`request_path.respond`, here or
#: in a model replica).
NodeCall = Callable[[Call], Awaitable[BaseResponse]]


class Member(Protocol):
    """What a pipeline reads of a model it calls: whether it serves."""

    @property
    def state(self) -> ModelState: ...

    @property
    def reason(self) -> str | None: ...


class PipelineRuntime:
    """Serves one pipeline (the `ServedModel` protocol). `calls`: one per model node name;
    `members`: served model name → its state (empty where the host checks readiness before
    calling, as the Ray ingress does)."""

    #: The request path takes its `prepare`/`respond` steps from `check`/`run`.
    is_pipeline: ClassVar[bool] = True
    #: Served by worker processes (`workers.process_engine`): never here.
    forwards: ClassVar[bool] = False

    def __init__(self, plan: PipelinePlan, contract: ContractEntry,
                 calls: Mapping[str, NodeCall], default_timeout_s: float,
                 members: Mapping[str, Member] | None = None,
                 payloads: PayloadSettings | None = None) -> None:
        self.plan = plan
        self.spec: PipelineSpec = plan.spec
        self.contract = contract
        self.timeout_s = plan.spec.timeout_s or default_timeout_s
        self.calls = calls
        self.members = members or {}
        self.payloads = payloads or PayloadSettings()
        self._serialize = contract.response.__pydantic_serializer__.to_json

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def summary(self) -> str:
        return pipeline_summary(self.plan)

    @property
    def state(self) -> ModelState:
        states = {m.state for m in self.members.values()}
        for state in (ModelState.FAILED, ModelState.LOADING):
            if state in states:
                return state
        return ModelState.READY

    @property
    def reason(self) -> str | None:
        waiting = [f"model {name!r}: {m.reason}" for name, m in self.members.items()
                   if m.state is not ModelState.READY]
        return "; ".join(waiting) or None

    def ensure_ready(self) -> None:
        ensure_serving(f"pipeline {self.name!r}", self.state, self.reason)

    async def handle(self, call: Call) -> Answer:
        return await request_path.predict(self, call)

    async def validate(self, call: Call) -> Call:
        return await request_path.validate(self, call)

    def encode(self, response: BaseResponse) -> bytes:
        return self._serialize(response)

    def check(self, request: BaseRequest) -> None:
        """The request path's `prepare` step for a pipeline: its combiners' checks."""
        for combiner in self.plan.combiners.values():
            try:
                combiner.validate_request(request)
            except InvalidRequest as exc:
                raise InvalidRequest(exc.problems, message="this pipeline cannot answer the "
                                     "request") from None

    async def run(self, request: BaseRequest, call: Call) -> BaseResponse:
        """The request path's `respond` step for a pipeline: the DAG, within the deadline."""
        budget = call.budget_s or self.timeout_s
        try:
            async with asyncio.timeout(budget):
                return await self._run(request, call.request_id, budget)
        except TimeoutError:
            raise past_deadline(f"pipeline {self.name!r}") from None

    async def _run(self, request: BaseRequest, request_id: str, budget: float) -> BaseResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        node_request = request.model_copy(update={"model_name": None, "request_id": None})
        tasks: dict[str, asyncio.Task[BaseResponse]] = {}

        async def model_node(name: str, model: str) -> BaseResponse:
            try:
                return await self.calls[model](Call.typed(
                    model, node_request, request_id, max(deadline - loop.time(), 0.001)))
            except RequestError as exc:
                exc.message = f"pipeline {self.name!r}, node {name!r}: {exc.message}"
                exc.args = (exc.message,)
                raise

        async def combiner_node(name: str) -> BaseResponse:
            node = self.spec.nodes[name]
            inputs = await asyncio.gather(*(tasks[source] for source in node.inputs))
            try:
                return self.plan.combiners[name].combine(request, dict(zip(node.inputs, inputs,
                                                                           strict=True)))
            except Exception:
                log.error("combiner %r of pipeline %r failed (request id %s):\n%s",
                          node.combiner, self.name, request_id, traceback.format_exc())
                raise BackendFailed(f"pipeline {self.name!r}, node {name!r}: the combiner "
                                    "failed; the error is in the server log under this "
                                    "request id") from None

        try:
            for name in self.plan.order:  # inputs first: their tasks exist when awaited
                node = self.spec.nodes[name]
                work = model_node(name, node.model) if node.model else combiner_node(name)
                tasks[name] = loop.create_task(work)
            return await tasks[self.spec.output]
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def describe(self) -> dict[str, Any]:
        return pipeline_description(self.plan, self.state, self.reason, self.timeout_s)


def pipeline_summary(plan: PipelinePlan) -> str:
    combiners = sorted({n.combiner for n in plan.spec.nodes.values() if n.combiner})
    return (f"Predict with pipeline {plan.spec.name} ({plan.model_type}: models "
            f"{', '.join(sorted(set(plan.models.values())))}; combined by "
            f"{', '.join(combiners) or 'none'})")


def pipeline_description(plan: PipelinePlan, state: ModelState, reason: str | None,
                         timeout_s: float) -> dict[str, Any]:
    """The listing entry (GET /models) of a pipeline."""
    return {
        "name": plan.spec.name,
        "kind": "pipeline",
        "model_type": plan.model_type,
        "state": state.value,
        "reason": reason,
        "timeout_s": timeout_s,
        "nodes": {name: node.model_dump(exclude_defaults=True)
                  for name, node in plan.spec.nodes.items()},
        "output": plan.spec.output,
        "order": plan.order,
    }


def pipeline_over(plan: PipelinePlan, contract: ContractEntry, members: Mapping[str, Any],
                  default_timeout_s: float,
                  payloads: PayloadSettings | None = None) -> PipelineRuntime:
    """A pipeline whose model nodes are typed calls into each member model's request path
    (`request_path.respond`) from this process — the model served here (tier 1), or
    forwarded by it to its worker process (tier 1 on several processes)."""
    return PipelineRuntime(plan, contract,
                           {name: partial(request_path.respond, model)
                            for name, model in members.items()},
                           default_timeout_s, members=members, payloads=payloads)
