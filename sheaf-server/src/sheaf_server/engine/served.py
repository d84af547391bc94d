"""What an HTTP host needs from the engine, whether the models run in this process or
elsewhere (Ray replicas reached through handles).

`Engine`/`ModelRuntime` run models here; `sheaf_server.ray.remote` has the Ray-side twins.
The ASGI app is written against these protocols only, so the same routes, status codes and
error bodies serve both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from sheaf_core.codecs import JSON_MEDIA_TYPE
from sheaf_core.registry import ContractEntry
from sheaf_core.spec import ServerSettings
from sheaf_server.engine.answer import Answer
from sheaf_server.engine.errors import ModelNotFound
from sheaf_server.engine.model import ModelState
from sheaf_server.engine.streaming import EventStream


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

    async def handle(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     timeout_s: float | None = None,
                     media_type: str = JSON_MEDIA_TYPE) -> Answer:
        """The request path for one body (JSON, or a format of the contract's codecs): the
        encoded response and the id it was answered under."""
        ...

    async def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class StreamingModel(Protocol):
    """A served model that can stream (`POST /{name}/stream`)."""

    async def stream(self, body: bytes | str, request_id: str, *, body_id_wins: bool = False,
                     media_type: str = JSON_MEDIA_TYPE) -> tuple[str, EventStream]:
        """Accept a streamed request (errors raised now, before any event), or refuse it:
        (the id it is answered under, its events). See `ModelRuntime.stream`."""
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
