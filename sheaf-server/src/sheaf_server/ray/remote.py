"""The Ray ingress's view of the models: each is a deployment reached through a
`DeploymentHandle`. Implements the same `ServingEngine`/`ServedModel` protocols as the local
engine, so the one FastAPI app serves both hosts.

The request path itself (`engine.request_path`) runs in the model's replica, the very code
tier 1 runs; this side only forwards each `Call` (`ray.transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle

from sheaf_core.backend import Backend
from sheaf_core.errors import RequestError
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec
from sheaf_core.registry import ContractEntry, Registry, registry_with
from sheaf_core.spec import ModelSpec
from sheaf_server.engine import request_path
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.pipeline import pipeline_description, pipeline_summary
from sheaf_server.engine.runtime import ModelBase
from sheaf_server.engine.served import ModelTable, build_table
from sheaf_server.engine.state import ModelState
from sheaf_server.ray import transport
from sheaf_server.ray.options import deployment_options
from sheaf_server.settings import ServerSettings

T = TypeVar("T")

log = logging.getLogger("sheaf.ray")

#: Ray deployment status → the engine's model state.
_READY = {"HEALTHY", "UPSCALING", "DOWNSCALING"}
_FAILED = {"UNHEALTHY", "DEPLOY_FAILED"}
STARTING = "loading weights (replicas are starting)"


class RemoteDeployment(ModelBase):
    """A model's or a pipeline's deployment as seen from the ingress; state comes from
    Serve's status."""

    def __init__(self, spec: ModelSpec, contract: ContractEntry, handle: DeploymentHandle,
                 default_timeout_s: float) -> None:
        super().__init__(spec, contract, default_timeout_s, loading_reason=STARTING)
        self.deployment = handle
        self.coalescer = transport.Coalescer(handle, spec.name)
        self._was_ready = False

    def observe(self, status: str, message: str) -> None:
        """Fold Ray's deployment status into the model state. A rolling update (UPDATING)
        keeps a serving model ready: the old replicas answer until new ones are up."""
        if status in _READY or (status == "UPDATING" and self._was_ready):
            self.state, self.reason, self._was_ready = ModelState.READY, None, True
        elif status in _FAILED:
            self.state = ModelState.FAILED
            self.reason = f"deployment {status.lower()}: {message}".rstrip(": ")
        else:
            self.state, self.reason = ModelState.LOADING, STARTING

    async def handle(self, call: Call) -> Answer:
        """Forward the call to a replica, which runs the request path.

        A `request_id` in the body always wins here: Ray's HTTP layer (its proxy, or
        HAProxy) gives every request an X-Request-ID before sheaf sees it, so a generated id
        cannot be told from a sent one. Tier 1 differs only for a client that sends both.
        """
        result = await self._forward(call, self.coalescer.call)
        if isinstance(result, RequestError):  # the replica's outcome, sent back as a value
            raise result
        return result

    async def validate(self, call: Call) -> Call:
        """A job's checks, run by a replica."""
        return await self._forward(call, partial(transport.validate, self.deployment))

    async def _forward(self, call: Call, send: Callable[[Call, float], Awaitable[T]]) -> T:
        """What every call to a replica does around the transport: refuse while the
        deployment is not ready, let a body's `request_id` win (see `handle`), and put the
        call's id on a refusal met on the way."""
        try:
            self.ensure_ready()
            return await send(replace(call, id_generated=True),
                              call.budget_s or self.timeout_s)
        except RequestError as exc:
            raise request_path.stamp_error(exc, call.request_id) from None

    async def describe(self) -> dict[str, Any]:
        """One replica's own description (its batch stats), plus the deployment options."""
        info: dict[str, Any] | None = None
        if self.state is ModelState.READY:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    info = await self.deployment.describe.remote()
        if info is None:
            info = {**self.description(), "stats": None}
        info["state"], info["reason"] = self.state.value, self.reason  # the ingress's view
        info["ingress"] = {"calls": self.coalescer.calls, "requests": self.coalescer.items}
        info["ray"] = {k: v for k, v in deployment_options(self.spec).items() if k != "name"}
        return info


class RemoteModel(RemoteDeployment):
    """A model deployment: predictions (coalesced) and streams."""

    async def stream(self, call: Call) -> tuple[str, transport.RemoteStream]:
        """Open a streamed request on a replica (`ray.transport`)."""
        return await self._forward(call, partial(transport.open_stream, self.deployment))


class RemotePipeline(RemoteDeployment):
    """A pipeline deployment as seen from the ingress: ready when its own deployment and
    every model it calls are."""

    def __init__(self, plan: PipelinePlan, contract: ContractEntry, handle: DeploymentHandle,
                 default_timeout_s: float, members: Mapping[str, RemoteModel]) -> None:
        super().__init__(plan.spec, contract, handle, default_timeout_s)  # type: ignore[arg-type]
        self.plan = plan
        self.members = members

    @property
    def summary(self) -> str:
        return pipeline_summary(self.plan)

    def observe(self, status: str, message: str) -> None:
        super().observe(status, message)
        if self.state is ModelState.FAILED:
            return
        # A model still loading (or failed) is the reason that matters: the pipeline's own
        # replica starts in a moment, the model's weights may take minutes.
        for name, member in self.members.items():
            if member.state is not ModelState.READY:
                self.state, self.reason = member.state, f"model {name!r}: {member.reason}"
                return

    async def describe(self) -> dict[str, Any]:
        return pipeline_description(self.plan, self.state, self.reason, self.timeout_s)


class RemoteEngine(ModelTable):
    """The ingress replica's engine: contracts resolved here (for routes and OpenAPI),
    models served by their deployments, states read from Serve's status."""

    def __init__(self, specs: Iterable[ModelSpec], handles: Mapping[str, DeploymentHandle],
                 settings: ServerSettings, plugins: Iterable[object] = (),
                 registry: Registry | None = None,
                 pipelines: Iterable[PipelineSpec] = ()) -> None:
        self.settings = settings
        self.handles = handles
        table = build_table(specs, pipelines, registry or registry_with(plugins),
                            self._model, self._pipeline)
        self.models: dict[str, RemoteDeployment] = dict(table[1])
        self._watcher: asyncio.Task[None] | None = None

    def _model(self, spec: ModelSpec, backend: Backend[Any, Any],
               contract: ContractEntry) -> RemoteModel:
        del backend  # constructed (its kwargs checked), never loaded, here
        return RemoteModel(spec, contract, self.handles[spec.name],
                           self.settings.request_timeout_s)

    def _pipeline(self, plan: PipelinePlan, contract: ContractEntry,
                  members: Mapping[str, RemoteModel]) -> RemotePipeline:
        return RemotePipeline(plan, contract, self.handles[plan.spec.name],
                              self.settings.request_timeout_s, members)

    async def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.gather(*(m.coalescer.close() for m in self.models.values()))

    async def _watch(self) -> None:
        """Poll Serve's status: often while a model is not ready, then now and then."""
        app_name = serve.get_replica_context().app_name
        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                deployments = status.applications[app_name].deployments
                for name, model in self.models.items():
                    if name in deployments:
                        model.observe(str(deployments[name].status.value),
                                      deployments[name].message)
            except Exception:
                log.warning("reading Serve status failed; retrying", exc_info=True)
            settled = all(m.state is not ModelState.LOADING for m in self.models.values())
            await asyncio.sleep(2.0 if settled else 0.25)
