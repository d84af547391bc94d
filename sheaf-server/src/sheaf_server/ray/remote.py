"""The Ray ingress's view of the models: each is a deployment reached through a
`DeploymentHandle`. Implements the same `ServingEngine`/`ServedModel` protocols as the local
engine, so the one FastAPI app serves both hosts.

The request path itself (parse → check → batch → backend → encode) runs in the model's
replica, in the same `ModelRuntime.handle` tier 1 calls; this side only forwards the body and
turns Ray's failures (back-pressure, a dead replica) into the engine's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec, plan_pipelines
from sheaf_core.registry import ContractEntry, Registry, registry_with
from sheaf_core.spec import ModelSpec, ServerSettings, build_backend
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.errors import EngineError
from sheaf_server.engine.model import ModelBase, ModelState
from sheaf_server.engine.pipeline import NodeCall, pipeline_description, pipeline_summary
from sheaf_server.engine.served import ModelTable
from sheaf_server.ray.coalesce import Coalescer
from sheaf_server.ray.options import deployment_options
from sheaf_server.ray.remote_calls import CallMeta, call_replica
from sheaf_server.ray.remote_stream import RemoteStream, open_remote_stream

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
        self.coalescer = Coalescer(handle, spec.name)
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

    async def handle(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     timeout_s: float | None = None,
                     media_type: str = JSON_MEDIA_TYPE) -> Answer:
        """Forward the body to a replica, which runs the engine's request path.

        A `request_id` in the body always wins here: Ray's HTTP layer (its proxy, or
        HAProxy) gives every request an X-Request-ID before sheaf sees it, so a generated id
        cannot be told from a sent one. Tier 1 differs only for a client that sends both.
        """
        del body_id_wins
        budget = timeout_s or self.timeout_s
        try:
            self.ensure_ready()
            result = await self.coalescer.call(body, request_id, True, budget,
                                               CallMeta.here(media_type))
        except EngineError as exc:
            exc.request_id = exc.request_id or request_id
            raise
        if isinstance(result, EngineError):  # the replica's outcome, sent back as a value
            raise result
        return result

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

    async def stream(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     media_type: str = JSON_MEDIA_TYPE) -> tuple[str, RemoteStream]:
        """Open a streamed request on a replica (`sheaf_server.ray.remote_stream`); a
        `request_id` in the body wins, as for `handle`."""
        del body_id_wins
        try:
            self.ensure_ready()
            return await open_remote_stream(self.deployment, self.name, body, request_id,
                                            self.timeout_s, CallMeta.here(media_type))
        except EngineError as exc:
            exc.request_id = exc.request_id or request_id
            raise


def node_call(handle: DeploymentHandle, name: str, contract: ContractEntry) -> NodeCall:
    """A pipeline's model node on Ray: the typed request to a replica of model `name`,
    its answer parsed back into the contract's response."""

    async def call(request: BaseRequest, request_id: str, budget: float) -> BaseResponse:
        result = await call_replica(handle, name, request.model_dump_json(), request_id,
                                    False, budget, CallMeta.here())
        if isinstance(result, EngineError):
            raise result
        return contract.response.model_validate_json(result.body)

    return call


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
        registry = registry or registry_with(plugins)
        models: dict[str, RemoteModel] = {}
        for spec in specs:
            backend = build_backend(spec, registry)  # constructed, never loaded, here
            contract = registry.contract(type(backend).model_type)
            models[spec.name] = RemoteModel(spec, contract, handles[spec.name],
                                            settings.request_timeout_s)
        self.models: dict[str, RemoteDeployment] = dict(models)
        model_types = {name: m.contract.model_type for name, m in models.items()}
        for plan in plan_pipelines(pipelines, model_types, registry):
            self.models[plan.spec.name] = RemotePipeline(
                plan, registry.contract(plan.model_type), handles[plan.spec.name],
                settings.request_timeout_s,
                {model: models[model] for model in plan.models.values()})
        self._watcher: asyncio.Task[None] | None = None

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
