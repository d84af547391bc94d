"""`ModelSpec` and its policies: what to serve and how, from YAML or Python alike.

Every model has `extra="forbid"`, so a misspelled key is an error naming it rather than a
setting silently ignored. `load_config()` turns pydantic errors into messages that name the
model (by its `name`) and the field, e.g.
``models[1] 'forecaster': batching.max_batch_size: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sheaf_core.errors import ConfigError, PluginError
from sheaf_core.registry import Registry, default_registry

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
RESERVED_NAMES = {"health", "ready", "models", "metrics", "docs", "redoc", "openapi.json",
                  "invocations", "ping"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchingPolicy(_Strict):
    """How the dynamic batcher groups requests for this model."""

    enabled: bool = Field(default=True, description="False: every request runs alone.")
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(
        default=2.0, ge=0, le=10_000,
        description="How long the first request of a batch may wait for others. Requests "
        "that arrive while the backend is busy are batched regardless.")
    bucket_by: list[str] = Field(
        default_factory=list,
        description="Request fields whose values must be equal within a batch "
        "(e.g. [horizon] or, for images, [height, width]).")
    max_queue_size: int = Field(
        default=1024, ge=1, le=1_000_000,
        description="Requests waiting beyond this are refused with 503 and Retry-After.")
    max_concurrent_batches: int = Field(
        default=1, ge=1, le=64, description="Batches run in parallel (threads) per model.")


class ResourcePolicy(_Strict):
    """Resources a model needs; used by the Ray runtime, informative for plain ASGI."""

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory: int | None = Field(default=None, ge=0, description="Bytes.")


class ModelSpec(_Strict):
    """One served model: a route name, a backend, its kwargs and its policies."""

    name: str = Field(pattern=NAME_PATTERN, description="Route prefix: /{name}/predict.")
    backend: str = Field(min_length=1, description="A registered backend name, e.g. 'chronos'.")
    model_type: str | None = Field(
        default=None, description="Optional; checked against the backend's model type.")
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    batching: BatchingPolicy = Field(default_factory=BatchingPolicy)
    resources: ResourcePolicy = Field(default_factory=ResourcePolicy)
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="Per-request deadline; defaults to server.request_timeout_s.")

    @model_validator(mode="after")
    def _not_reserved(self) -> ModelSpec:
        if self.name in RESERVED_NAMES:
            raise ValueError(f"name {self.name!r} is reserved for a server route; pick another")
        return self


class ServerSettings(_Strict):
    """Settings of the HTTP host."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_model: str | None = Field(
        default=None, description="Model answering POST /invocations (SageMaker); defaults "
        "to the only model when there is one.")
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    drain_timeout_s: float = Field(default=30.0, ge=0, le=3600,
                                   description="Grace period for in-flight work on shutdown.")
    access_log: bool = False


class SheafConfig(_Strict):
    """A whole sheaf.yaml: the models and the server settings."""

    models: list[ModelSpec] = Field(min_length=1)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @model_validator(mode="after")
    def _check_names(self) -> SheafConfig:
        seen: set[str] = set()
        for spec in self.models:
            if spec.name in seen:
                raise ValueError(f"two models are named {spec.name!r}; names must be unique")
            seen.add(spec.name)
        default = self.server.default_model
        if default is not None and default not in seen:
            raise ValueError(f"server.default_model {default!r} is not one of the models: "
                             f"{', '.join(sorted(seen))}")
        return self


def parse_config(data: Any, source: str = "config") -> SheafConfig:
    """Validate a config mapping; ConfigError messages name the model and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models' list, got "
                          f"{type(data).__name__}")
    try:
        return SheafConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid:\n" + _format_errors(exc, data)) from None


def load_config(path: str | Path) -> SheafConfig:
    """Read and validate a sheaf.yaml file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))


def check_spec(spec: ModelSpec, registry: Registry | None = None) -> None:
    """Check that the backend exists, matches `model_type`, and accepts `backend_kwargs`.

    Constructs the backend (cheap by contract), so a typo in a kwarg fails at start-up.
    """
    build_backend(spec, registry)


def build_backend(spec: ModelSpec, registry: Registry | None = None) -> Any:
    """The spec's backend, constructed but not loaded; ConfigError names model and field."""
    registry = registry or default_registry()
    where = f"model {spec.name!r}"
    try:
        cls = registry.backend(spec.backend)
    except PluginError as exc:
        raise ConfigError(f"{where}: backend: {exc}") from None
    if spec.model_type is not None and spec.model_type != cls.model_type:
        raise ConfigError(f"{where}: model_type: is {spec.model_type!r} but backend "
                          f"{spec.backend!r} serves {cls.model_type!r}")
    try:
        return cls(**spec.backend_kwargs)
    except ValidationError as exc:
        lines = "\n".join(f"  backend_kwargs.{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: backend_kwargs are invalid for backend "
                          f"{spec.backend!r}:\n{lines}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: backend_kwargs: {exc}") from None


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def _format_errors(exc: ValidationError, data: dict[str, Any]) -> str:
    models = data.get("models") if isinstance(data.get("models"), list) else []
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        prefix = ""
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            index = loc[1]
            entry = models[index] if index < len(models) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            prefix = f"models[{index}]" + (f" {name!r}" if name else "") + ": "
            loc = loc[2:]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see docs/configuration.md)"
        lines.append(f"  {prefix}{_loc(tuple(loc))}: {message}")
    return "\n".join(lines)
