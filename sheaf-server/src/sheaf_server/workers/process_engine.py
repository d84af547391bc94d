"""An HTTP worker's engine: the models run in model worker processes, reached through
`ModelLink`s; everything else of the request path runs here.

A `ProcessModel` is entered through the request path like a model in this process
(`request_path.predict`): ready? → decode → settle the id here, then the typed call is
forwarded (`request_path.compute`) to a worker process, which prepares it (features,
limits, the backend's checks), looks it up in the cache and batches it with the requests
of every other HTTP worker; the typed response comes back and is stamped and encoded here.
Pipelines run here, their model nodes typed calls to the models' workers. Streams and a
job's checks are forwarded whole (the worker runs the request path's `stream`/`validate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar

from sheaf_core.backend import Backend
from sheaf_core.codecs import PayloadSettings
from sheaf_core.contracts.base import BaseResponse
from sheaf_core.errors import ConfigError, RequestError
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec
from sheaf_core.registry import ContractEntry, Registry, registry_with
from sheaf_core.spec import ModelSpec
from sheaf_server.engine import request_path
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.pipeline import PipelineRuntime, pipeline_over
from sheaf_server.engine.runtime import ModelBase
from sheaf_server.engine.served import ModelTable, build_table
from sheaf_server.engine.state import ModelState
from sheaf_server.settings import ServerSettings
from sheaf_server.workers.link import STARTING, LinkStream, ModelLink

#: How long a hot swap waits for a model worker that is (re)starting to accept it.
UPDATE_CONNECT_S = 60.0
#: How long an HTTP worker waits, before it listens, for its links to connect.
CONNECT_AT_START_S = 30.0


class ProcessModel(ModelBase):
    """A model served by one or more worker processes (its `replicas`), as an HTTP worker
    (or the supervisor) sees it: ready while any of them serves; each call goes to the
    serving replica with the fewest calls in flight."""

    is_pipeline: ClassVar[bool] = False
    #: The request path forwards its typed calls (`request_path.compute`).
    forwards: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec, contract: ContractEntry, default_timeout_s: float,
                 links: Sequence[ModelLink], payloads: PayloadSettings) -> None:
        super().__init__(spec, contract, default_timeout_s, loading_reason=STARTING)
        self.links = list(links)
        self.payloads = payloads
        self._serialize = contract.response.__pydantic_serializer__.to_json
        for link in self.links:
            link.on_change = self.observe

    def observe(self) -> None:
        """Fold the replicas' announced states into the model's; adopt the spec they serve
        (a hot swap changes the deadline and limits every HTTP worker applies)."""
        states = [link.state for link in self.links]
        if ModelState.READY in states:
            self.state, self.reason = ModelState.READY, None
        else:
            waiting = [link for link in self.links if link.state is ModelState.LOADING]
            shown = waiting[0] if waiting else self.links[0]
            self.state, self.reason = shown.state, shown.reason
        announced = [link.announced for link in self.links if link.announced is not None]
        if announced:
            newest = max(announced, key=attrgetter("generation"))
            self.generation = newest.generation
            if newest.spec != self.spec:
                self.respec(newest.spec)

    def _link(self) -> ModelLink:
        if len(self.links) == 1:  # the usual case: no choice to make on the hot path
            return self.links[0]
        serving = [link for link in self.links if link.state is ModelState.READY]
        return min(serving or self.links, key=attrgetter("in_flight"))

    def _budget(self, call: Call) -> float:
        return call.budget_s or self.timeout_s

    # -- entries ---------------------------------------------------------------------------

    async def handle(self, call: Call) -> Answer:
        return await request_path.predict(self, call)

    async def forward(self, call: Call) -> BaseResponse:
        """`request_path.compute` for this model: the typed call to a worker process."""
        result = await self._link().call("respond", call.leaving(), self._budget(call))
        if isinstance(result, RequestError):
            raise result
        assert isinstance(result, BaseResponse)
        return result

    async def validate(self, call: Call) -> Call:
        """A job's checks, run by a worker process (it holds the feature store and the
        loaded backend's checks)."""
        try:
            self.ensure_ready()
            result = await self._link().call("validate", call.leaving(), self._budget(call))
        except RequestError as exc:
            raise request_path.stamp_error(exc, call.request_id) from None
        if isinstance(result, RequestError):
            raise result
        assert isinstance(result, Call)
        return result

    async def stream(self, call: Call) -> tuple[str, LinkStream]:
        """A streamed request, accepted (or refused) by a worker process; its events
        cross as they happen."""
        try:
            self.ensure_ready()
            return await self._link().stream(call.leaving(), self._budget(call))
        except RequestError as exc:
            raise request_path.stamp_error(exc, call.request_id) from None

    def encode(self, response: BaseResponse) -> bytes:
        return self._serialize(response)

    async def describe(self) -> dict[str, Any]:
        """A serving replica's description (its batch counters), with every replica's
        process and state."""
        info: dict[str, Any] | None = None
        if self.state is ModelState.READY:
            try:
                info = await self._link().call("describe", None, 10.0)
            except (RequestError, OSError):
                info = None
        if info is None:
            info = {**self.description(), "stats": None}
        info["state"], info["reason"] = self.state.value, self.reason
        info["processes"] = [
            {"pid": link.announced.pid if link.announced else None,
             "state": link.state.value, "reason": link.reason, "in_flight": link.in_flight}
            for link in self.links]
        return info

    async def update(self, spec: ModelSpec) -> None:
        """Hot-swap every replica to `spec`, one after another (each keeps serving while it
        loads the new weights); the first refusal (ConfigError, UpdateFailed) is raised."""
        for link in self.links:
            await link.wait_connected(UPDATE_CONNECT_S)
            await link.call("update", spec, None)


class ProcessEngine(ModelTable):
    """The models of a config, each served by its worker processes at `sockets[name]`
    (one Unix socket path per replica); pipelines run in this process."""

    def __init__(self, specs: Iterable[ModelSpec], sockets: Mapping[str, Sequence[str]],
                 settings: ServerSettings, plugins: Iterable[object] = (),
                 registry: Registry | None = None,
                 pipelines: Iterable[PipelineSpec] = (),
                 connect_at_start_s: float = 0.0) -> None:
        self.settings = settings
        self.sockets = sockets
        self.connect_at_start_s = connect_at_start_s
        self.runtimes, self.models = build_table(
            specs, pipelines, registry or registry_with(plugins), self._model, self._pipeline)

    def _model(self, spec: ModelSpec, backend: Backend[Any, Any],
               contract: ContractEntry) -> ProcessModel:
        del backend  # constructed (its kwargs checked) only; a worker process loads it
        links = [ModelLink(spec.name, path) for path in self.sockets[spec.name]]
        return ProcessModel(spec, contract, self.settings.request_timeout_s, links,
                            self.settings.payloads)

    def _pipeline(self, plan: PipelinePlan, contract: ContractEntry,
                  members: Mapping[str, ProcessModel]) -> PipelineRuntime:
        return pipeline_over(plan, contract, members, self.settings.request_timeout_s,
                             self.settings.payloads)

    async def start(self) -> None:
        """Connect to every model worker. An HTTP worker waits (up to `connect_at_start_s`)
        until every link is connected or its worker reported failed, because it listens
        only once this returns: one started beside serving siblings (a restart, or the
        last of several to start) would otherwise answer 503 for a moment while a
        sibling's /ready says ready. The supervisor's control engine does not wait (the
        workers start after it). A worker still not reachable after that is answered for
        by its model's state, as after any loss."""
        links = [link for model in self.runtimes.values() for link in model.links]
        for link in links:
            link.start()
        if self.connect_at_start_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.gather(*(link.wait_settled(self.connect_at_start_s)
                                       for link in links))

    async def stop(self) -> None:
        await asyncio.gather(*(link.close() for model in self.runtimes.values()
                               for link in model.links))

    async def update(self, spec: ModelSpec) -> None:
        """Hot-swap the model named `spec.name` in its worker processes."""
        model = self.runtimes.get(spec.name)
        if model is None:
            raise ConfigError(f"model {spec.name!r}: no such model to update; served: "
                              f"{', '.join(sorted(self.runtimes))}. Adding a model needs a "
                              "restart (its routes are part of the API)")
        await model.update(spec)
