"""A pipeline served like a model: one route, one typed request, one typed response, and
a DAG behind it — model nodes answer the request, combiner nodes merge their inputs.

Written once for both hosts: the nodes are reached through `NodeCall`s, which call a
`ModelRuntime` in this process (tier 1) or a model deployment's handle (Ray). Model nodes
run concurrently, each batched with the model's other traffic.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from sheaf_core.codecs import JSON_MEDIA_TYPE, PayloadSettings
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.errors import InvalidRequest
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec
from sheaf_core.registry import ContractEntry
from sheaf_server.engine import tracing
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.errors import (
    BackendFailed,
    DeadlineExceeded,
    EngineError,
    RequestInvalid,
)
from sheaf_server.engine.model import (
    ModelState,
    decode_body,
    encode_answer,
    ensure_serving,
)

log = logging.getLogger("sheaf.engine")

#: (request, request id, seconds left) → the node model's response.
NodeCall = Callable[[BaseRequest, str, float], Awaitable[BaseResponse]]


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
        self._validate_json = contract.request.model_validate_json
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

    async def handle(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     timeout_s: float | None = None,
                     media_type: str = JSON_MEDIA_TYPE) -> Answer:
        """Decode → check (combiners) → run the DAG within the deadline → encode."""
        try:
            ensure_serving(f"pipeline {self.name!r}", self.state, self.reason)
            with tracing.step("sheaf.validate", {"sheaf.pipeline": self.name,
                                                 "sheaf.media_type": media_type}):
                decoded = await decode_body(self.contract, self._validate_json,
                                            self.payloads, body, media_type)
                request = decoded.request
                if body_id_wins and request.request_id:
                    request_id = request.request_id
                self._check(request)
            tracing.annotate({"sheaf.pipeline": self.name, "sheaf.request_id": request_id})
            budget = timeout_s or self.timeout_s
            try:
                async with asyncio.timeout(budget):
                    response = await self._run(request, request_id, budget)
            except TimeoutError:
                raise DeadlineExceeded(f"pipeline {self.name!r} did not finish within "
                                       "the request deadline") from None
            response.request_id, response.model_name = request_id, self.name
            return await encode_answer(decoded, response, self._serialize)
        except EngineError as exc:
            exc.request_id = request_id
            raise

    def _check(self, request: BaseRequest) -> None:
        for combiner in self.plan.combiners.values():
            try:
                combiner.validate_request(request)
            except InvalidRequest as exc:
                raise RequestInvalid("this pipeline cannot answer the request",
                                     problems=exc.problems) from None

    async def _run(self, request: BaseRequest, request_id: str, budget: float) -> BaseResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        node_request = request.model_copy(update={"model_name": None, "request_id": None})
        tasks: dict[str, asyncio.Task[BaseResponse]] = {}

        async def model_node(name: str, model: str) -> BaseResponse:
            try:
                return await self.calls[model](node_request, request_id,
                                               max(deadline - loop.time(), 0.001))
            except EngineError as exc:
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
