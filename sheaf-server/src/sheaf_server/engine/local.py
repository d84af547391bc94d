"""The engine in this process: every served model, built from specs, loaded, and stopped
together."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sheaf_core.backend import Backend
from sheaf_core.errors import ConfigError
from sheaf_core.pipeline_spec import PipelinePlan, PipelineSpec
from sheaf_core.registry import ContractEntry, Registry, registry_with
from sheaf_core.spec import ModelSpec, build_backend
from sheaf_server.engine.loading import WAITING
from sheaf_server.engine.pipeline import PipelineRuntime, pipeline_over
from sheaf_server.engine.runtime import ModelRuntime
from sheaf_server.engine.served import ModelTable, build_table
from sheaf_server.settings import ServerSettings

log = logging.getLogger("sheaf.engine")


class Engine(ModelTable):
    """Owns one `ModelRuntime` per spec, run in this process. Host-neutral: no HTTP, no
    Ray (a Ray model replica is an `Engine` of one model)."""

    def __init__(self, specs: Iterable[ModelSpec], settings: ServerSettings | None = None,
                 registry: Registry | None = None, plugins: Iterable[object] = (), *,
                 pipelines: Iterable[PipelineSpec] = ()) -> None:
        self.settings = settings or ServerSettings()
        self.registry = registry or registry_with(plugins)
        self.runtimes, self.models = build_table(specs, pipelines, self.registry,
                                                 self._model, self._pipeline)
        self._load_task: asyncio.Task[None] | None = None

    def _model(self, spec: ModelSpec, backend: Backend[Any, Any],
               contract: ContractEntry) -> ModelRuntime:
        return ModelRuntime(spec, backend, contract, self.settings.request_timeout_s,
                            self.settings.payloads)

    def _pipeline(self, plan: PipelinePlan, contract: ContractEntry,
                  members: Mapping[str, ModelRuntime]) -> PipelineRuntime:
        """A pipeline whose model nodes enter each model's request path here."""
        return pipeline_over(plan, contract, members, self.settings.request_timeout_s,
                             self.settings.payloads)

    async def start(self) -> None:
        """Start batchers, and load the models in the background one after another, in the
        config's order (`engine.loading` says why not at once)."""
        for runtime in self.runtimes.values():
            runtime.batcher.start()
            runtime.reason = WAITING
        self._load_task = asyncio.get_running_loop().create_task(self._load_all())

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load_all(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.load()
        # Long-lived objects (weights, modules) never need scanning again: freezing them cut
        # p99 latency under load several-fold by shortening collector pauses.
        gc.collect()
        gc.freeze()

    async def update(self, spec: ModelSpec) -> None:
        """Hot-swap the model named `spec.name` to `spec` (new weights, kwargs, batching or
        deadline) while it serves; see `ModelRuntime.swap`. ConfigError (unknown model, bad
        kwargs, another model type) or UpdateFailed (load failed) leave it unchanged."""
        runtime = self.runtimes.get(spec.name)
        if runtime is None:
            raise ConfigError(f"model {spec.name!r}: no such model to update; served: "
                              f"{', '.join(sorted(self.runtimes))}. Adding a model needs a "
                              "restart (its routes are part of the API)")
        backend = build_backend(spec, self.registry)
        await runtime.swap(spec, backend, self.settings.drain_timeout_s)

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Drain queued and running batches (for `server.drain_timeout_s`, or
        `drain_timeout_s`), then release backends."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        drain = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await asyncio.gather(*(r.batcher.close(drain) for r in self.runtimes.values()))
        for runtime in self.runtimes.values():
            try:
                runtime.backend.close()
            except Exception:
                log.exception("closing model %r failed", runtime.name)
