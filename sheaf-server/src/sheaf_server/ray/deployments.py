"""The deployment classes of a sheaf application on Ray Serve.

`ModelReplica`: one replica of one model — a local single-model `Engine`, so each `Call`
that reaches it (`ray.transport`) takes the request path tier 1 runs
(`engine.request_path`). Batches form here, inside the replica.

`PipelineReplica`: one pipeline — the engine's `PipelineRuntime`, its model nodes typed
calls to the model deployments (`transport.respond`).

`SheafIngress`: the HTTP entry — the same FastAPI app as tier 1 (`create_app`), built at
replica start over a `RemoteEngine` whose models are the `ModelReplica` deployments.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from sheaf_core.contracts.base import BaseResponse
from sheaf_core.errors import ConfigError, RequestError, UpdateFailed
from sheaf_core.pipeline_spec import PipelineSpec, plan_pipeline
from sheaf_core.registry import registry_with
from sheaf_core.spec import ModelSpec
from sheaf_server.asgi.app import create_app
from sheaf_server.engine import Engine, ModelRuntime, ModelState, ServedModel, replica_side
from sheaf_server.engine.call import Call
from sheaf_server.engine.pipeline import PipelineRuntime
from sheaf_server.ray import transport
from sheaf_server.ray.logs import route_to_serve_logs
from sheaf_server.ray.remote import RemoteEngine
from sheaf_server.settings import JobSettings, ServedModelSpec, ServerSettings
from sheaf_server.telemetry import configure_tracing

log = logging.getLogger("sheaf.ray")


def set_up_replica_process() -> None:
    """What every sheaf replica does first: tracing from the OTEL_* variables its
    runtime_env carries, and sheaf's log records into the replica's Serve log file."""
    configure_tracing()
    route_to_serve_logs()


class ServedReplica:
    """What the ingress calls on a model's or a pipeline's replica (`ray.transport`): each
    method one entry into the request path, its outcome returned as a value."""

    @property
    def runtime(self) -> ServedModel:
        raise NotImplementedError

    async def handle(self, call: Call) -> replica_side.Outcome:
        return await replica_side.answer(self.runtime, call)

    async def handle_many(self, calls: Sequence[Call]) -> list[replica_side.Outcome]:
        """Several calls the ingress coalesced into one: each through the request path,
        concurrently, so they batch together."""
        return await replica_side.answer_each(self.runtime, calls)

    async def validate(self, call: Call) -> Call | RequestError:
        """A job's submit: the request path's checks, nothing run."""
        return await replica_side.validated(self.runtime, call)


class ModelReplica(ServedReplica):
    """The spec arrives as the deployment's `user_config`, which Ray hands to `reconfigure`
    when the replica starts — before it routes any traffic to it — and again whenever the
    user_config changes (`ModelServer.update`, or an edited serve config), without
    restarting the replica. The first call loads; later calls hot-swap through the engine
    (`Engine.update`, tier 1's code). A failed first load fails the replica and Serve
    reports it (the ingress shows it in /ready)."""

    def __init__(self, settings: ServerSettings, plugins: Sequence[object] = ()) -> None:
        set_up_replica_process()
        self.settings = settings
        self.plugins = tuple(plugins)
        self.engine: Engine | None = None
        #: The last update that was not applied, and why (the replica then serves the
        #: previous spec): {"spec_fingerprint": ..., "message": ...}.
        self.update_error: dict[str, str] | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        spec = ServedModelSpec.model_validate(user_config["spec"])
        if self.engine is None:
            await self._start(spec)
            return
        if spec == self.engine.runtimes[spec.name].spec:
            return
        try:
            await self.engine.update(spec)
            self.update_error = None
        except (ConfigError, UpdateFailed) as exc:
            # Raising would make Serve replace this replica by one that fails the same way
            # at start: keep serving the previous spec and say why in GET /models/NAME.
            self.update_error = {"spec_fingerprint": spec_fingerprint(spec),
                                 "message": str(exc)}
            log.error("update of model %r not applied: %s", spec.name, exc)

    async def _start(self, spec: ModelSpec) -> None:
        engine = Engine([spec], self.settings, plugins=self.plugins)
        runtime = engine.runtimes[spec.name]
        await engine.start()
        await engine.wait_loaded()
        if runtime.state is not ModelState.READY:
            await engine.stop()
            raise RuntimeError(f"model {spec.name!r}: {runtime.reason}")
        self.engine = engine

    @property
    def runtime(self) -> ModelRuntime:
        assert self.engine is not None, "reconfigure() loads the model first"
        return next(iter(self.engine.runtimes.values()))

    async def stream(self, call: Call) -> AsyncIterator[replica_side.Message]:
        """A streamed request: the request path's stream, as messages, called with
        `handle.options(stream=True)`."""
        async for message in replica_side.replica_stream(self.runtime, call):
            yield message

    async def respond(self, call: Call) -> BaseResponse | RequestError:
        """A pipeline's model node: a typed call, the typed response (or its error) back."""
        return await replica_side.answer_typed(self.runtime, call)

    async def describe(self) -> dict[str, Any]:
        info = await self.runtime.describe()
        info["replica"] = serve.get_replica_context().replica_id.unique_id
        info["spec_fingerprint"] = spec_fingerprint(self.runtime.spec)
        info["update_error"] = self.update_error
        return info

    async def __del__(self) -> None:
        """Graceful shutdown: finish queued and running batches, release the backend."""
        if self.engine is not None:
            await self.engine.stop()


class PipelineReplica(ServedReplica):
    """A pipeline's combining node: the engine's `PipelineRuntime`, its model nodes called
    through the model deployments' handles (each batched with that model's traffic)."""

    def __init__(self, spec: PipelineSpec, model_types: Mapping[str, str],
                 settings: ServerSettings, models: Mapping[str, DeploymentHandle],
                 plugins: Sequence[object] = ()) -> None:
        set_up_replica_process()
        registry = registry_with(plugins)
        plan = plan_pipeline(spec, model_types, registry)
        calls = {model: partial(transport.respond, models[model])
                 for model in plan.models.values()}
        self.pipeline = PipelineRuntime(plan, registry.contract(plan.model_type), calls,
                                        settings.request_timeout_s,
                                        payloads=settings.payloads)

    @property
    def runtime(self) -> PipelineRuntime:
        return self.pipeline

    async def describe(self) -> dict[str, Any]:
        return await self.runtime.describe()


def spec_fingerprint(spec: ModelSpec) -> str:
    """Identifies a spec across processes: which one a replica serves after an update."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


@serve.ingress()
class SheafIngress:
    def __init__(self, specs: Sequence[ModelSpec], settings: ServerSettings,
                 models: Mapping[str, DeploymentHandle], plugins: Sequence[object] = (),
                 pipelines: Sequence[PipelineSpec] = (), jobs: JobSettings | None = None,
                 ) -> None:
        set_up_replica_process()  # before the app is built: it adds tracing middleware
        self.engine = RemoteEngine(specs, models, settings, plugins, pipelines=pipelines)
        self.jobs = jobs

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """The current specs (deadline, batching shown in GET /models/NAME) after an update;
        routes stay as built (an update keeps names and model types)."""
        for data in user_config["specs"]:
            spec = ServedModelSpec.model_validate(data)
            model = self.engine.models.get(spec.name)
            if model is not None:
                model.respec(spec)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.engine, jobs=self.jobs)
