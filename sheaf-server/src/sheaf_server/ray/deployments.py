"""The two deployment classes of a sheaf application on Ray Serve.

`ModelReplica`: one replica of one model — a local single-model `Engine`, so parsing,
validation, the dynamic batcher (policy and `bucket_by` from the spec), the backend and
encoding are the very code tier 1 runs. Batches form here, inside the replica.

`SheafIngress`: the HTTP entry — the same FastAPI app as tier 1 (`create_app`), built at
replica start over a `RemoteEngine` whose models are the `ModelReplica` deployments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from sheaf_core.spec import ModelSpec, ServerSettings
from sheaf_server.asgi.app import create_app
from sheaf_server.engine import Engine, EngineError, ModelState
from sheaf_server.ray.remote import RemoteEngine


class ModelReplica:
    """Loads in the constructor: Ray routes to a replica only once its constructor returned,
    so scale-up and rolling updates never send traffic to weights still loading. A failed
    load fails the replica, and Serve reports it (the ingress shows it in /ready)."""

    async def __init__(self, spec: ModelSpec, settings: ServerSettings,  # type: ignore[misc]
                       plugins: Sequence[object] = ()) -> None:
        self.engine = Engine([spec], settings, plugins=plugins)
        self.runtime = self.engine.models[spec.name]
        await self.engine.start()
        await self.engine.wait_loaded()
        if self.runtime.state is not ModelState.READY:
            reason = self.runtime.reason
            await self.engine.stop()
            raise RuntimeError(f"model {spec.name!r}: {reason}")

    async def handle(self, body: bytes | str, request_id: str, body_id_wins: bool,
                     timeout_s: float | None) -> tuple[str, bytes] | EngineError:
        """The engine's request path. Outcomes come back as values: an `EngineError` crosses
        the process boundary intact (status, code, field problems, request id)."""
        try:
            return await self.runtime.handle(body, request_id, body_id_wins=body_id_wins,
                                             timeout_s=timeout_s)
        except EngineError as exc:
            return exc

    async def describe(self) -> dict[str, Any]:
        info = await self.runtime.describe()
        info["replica"] = serve.get_replica_context().replica_id.unique_id
        return info

    async def __del__(self) -> None:
        """Graceful shutdown: finish queued and running batches, release the backend."""
        await self.engine.stop()


@serve.ingress()
class SheafIngress:
    def __init__(self, specs: Sequence[ModelSpec], settings: ServerSettings,
                 models: Mapping[str, DeploymentHandle], plugins: Sequence[object] = ()) -> None:
        self.engine = RemoteEngine(specs, models, settings, plugins)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.engine)
