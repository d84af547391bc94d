"""What an HTTP host needs from the engine, whether the models run in this process or
elsewhere (Ray replicas reached through handles).

`Engine`/`ModelRuntime` run models here; `sheaf_server.ray.remote` has the Ray ingress's
view, whose calls travel to replicas running the same request path. The ASGI app is written
against these protocols only, so the same routes, status codes and error bodies serve both;
`build_table` builds both hosts' model tables and plans their pipelines.

The names a served model has, by role: `ModelSpec` (what the config says), a backend (what
a plugin computes with), a `ModelRuntime` (the model served in this process: state,
batcher, cache), a `RemoteModel` (the Ray ingress's view of a model's deployment), a
`ModelReplica` (one Ray replica, holding a one-model `Engine`), and `ServedModel` (what a
host calls, any of them — or a pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from sheaf_core.backend import Backend
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec, plan_pipelines
from sheaf_core.registry import ContractEntry, Registry
from sheaf_core.spec import ModelSpec, build_backend
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call
from sheaf_server.engine.errors import ModelNotFound
from sheaf_server.engine.state import ModelState
from sheaf_server.engine.streaming import EventStream
from sheaf_server.settings import ServerSettings


class ServedModel(Protocol):
    """A served model or pipeline: one route, one contract."""

    contract: ContractEntry

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str:
        """One line for the OpenAPI document."""
        ...

    @property
    def state(self) -> ModelState: ...

    @property
    def reason(self) -> str | None: ...

    async def handle(self, call: Call) -> Answer:
        """The request path for one call (its body JSON, or a format of the contract's
        codecs): the encoded response and the id it was answered under."""
        ...

    async def validate(self, call: Call) -> Call:
        """The checks `handle` starts with (ready, decode, features, limits, the
        backend's), nothing run: raises what `handle` would refuse the call with; else
        the call under the id it would be answered with. A job is queued once it passes."""
        ...

    async def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class StreamingModel(Protocol):
    """A served model that can stream (`POST /{name}/stream`)."""

    async def stream(self, call: Call) -> tuple[str, EventStream]:
        """Accept a streamed request (errors raised now, before any event), or refuse it:
        (the id it is answered under, its events). See `request_path.stream`."""
        ...


class ServingEngine(Protocol):
    settings: ServerSettings

    @property
    def models(self) -> Mapping[str, ServedModel]: ...

    def model(self, name: str) -> ServedModel: ...

    @property
    def default_model(self) -> str | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...


class ModelTable:
    """Lookup, default model and readiness over a name → model table; shared by the local
    engine and the Ray ingress's, so both answer /ready, /invocations and 404s alike."""

    settings: ServerSettings
    models: Mapping[str, ServedModel]

    def model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            served = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; served models: {served}") from None

    @property
    def default_model(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        return next(iter(self.models)) if len(self.models) == 1 else None

    @property
    def loading(self) -> bool:
        return any(m.state is ModelState.LOADING for m in self.models.values())

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every model and pipeline serves — or, with `server.ready_when: any`,
        once loading is over and at least one does; lists each state."""
        states = {name: {"state": m.state.value, "reason": m.reason}
                  for name, m in self.models.items()}
        serving = [m.state is ModelState.READY for m in self.models.values()]
        if self.settings.ready_when == "all":
            ready = all(serving)
        else:
            ready = not self.loading and any(serving)
        return ready, states


M = TypeVar("M", bound=ServedModel)
P = TypeVar("P", bound=ServedModel)


def build_table(specs: Iterable[ModelSpec], pipelines: Iterable[PipelineSpec],
                registry: Registry,
                model: Callable[[ModelSpec, Backend[Any, Any], ContractEntry], M],
                pipeline: Callable[[PipelinePlan, ContractEntry, Mapping[str, M]], P],
                ) -> tuple[dict[str, M], dict[str, M | P]]:
    """Both hosts' model table, built in one place: each spec's backend constructed (never
    loaded here; a `ConfigError` names the model and field), its contract resolved, and
    the pipelines planned over the models' types. `model`/`pipeline` make the host's
    objects (`ModelRuntime`, or the Ray ingress's `RemoteModel`), a pipeline with its
    member models. Returns (the models, everything served: models then pipelines)."""
    models: dict[str, M] = {}
    for spec in specs:
        backend = build_backend(spec, registry)
        models[spec.name] = model(spec, backend, registry.contract(type(backend).model_type))
    served: dict[str, M | P] = dict(models)
    model_types = {name: m.contract.model_type for name, m in models.items()}
    for plan in plan_pipelines(pipelines, model_types, registry):
        served[plan.spec.name] = pipeline(plan, registry.contract(plan.model_type),
                                          {name: models[name] for name in plan.models.values()})
    return models, served
