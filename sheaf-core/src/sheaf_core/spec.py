"""`ModelSpec` and its policies: what a model is and how it batches, caches and reads
features — what every host (tier 1, Ray, a batch job) reads alike, from YAML or Python.

Host settings are the hosts': the HTTP server's `server:` section, Ray Serve's `ray:` per
model and `SheafConfig` (a whole sheaf.yaml) live in `sheaf_server.settings`; the old names
here still import, with a DeprecationWarning, for one release.

Every model has `extra="forbid"`, so a misspelled key is an error naming it rather than a
setting silently ignored; `format_errors` turns pydantic errors into messages that name the
model (by its `name`) and the field, e.g.
``models[1] 'forecaster': batching.max_batch_size: Input should be greater than 0``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sheaf_core.contracts.base import BaseRequest
from sheaf_core.contracts.limits import WorkLimits
from sheaf_core.errors import ConfigError, PluginError
from sheaf_core.names import NAME_PATTERN, check_not_reserved
from sheaf_core.registry import Registry, default_registry


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


class CachePolicy(_Strict):
    """The per-model response cache (off by default): identical requests within `ttl_s`
    are answered from memory, skipping the queue and the backend."""

    enabled: bool = False
    max_entries: int = Field(default=1024, ge=1, le=10_000_000,
                             description="Least recently used entries go first.")
    ttl_s: float = Field(default=300.0, gt=0, le=30 * 86400,
                         description="An entry is forgotten this long after it was stored.")
    exclude_fields: list[str] = Field(
        default_factory=list, description="Request fields left out of the key (request_id "
        "and model_name always are), e.g. a client tag that does not change the answer.")


class FeatureStoreSpec(_Strict):
    """The Feast feature store a model reads request features from (`features:`): a
    feature repository (the directory holding feature_store.yaml) or the same settings
    inline. Needs `pip install 'sheaf-server[feast]'`."""

    repo_path: str | None = Field(
        default=None, description="A Feast repo directory (with feature_store.yaml); a "
        "relative path is taken from the working directory of the process reading the config "
        "and stored absolute, so Ray replicas find it too.")
    config: dict[str, Any] | None = Field(
        default=None, description="feature_store.yaml's content inline (project, registry, "
        "provider, online_store, ...); give absolute paths in it.")

    @model_validator(mode="after")
    def _one_source(self) -> FeatureStoreSpec:
        if (self.repo_path is None) == (self.config is None):
            raise ValueError("give exactly one of repo_path (a Feast repo directory) or "
                             "config (feature_store.yaml's content inline)")
        if self.repo_path is not None:
            self.repo_path = str(Path(self.repo_path).expanduser().absolute())
        return self


class ModelSpec(_Strict):
    """One served model: a route name, a backend, its kwargs and its policies."""

    name: str = Field(pattern=NAME_PATTERN, description="Route prefix: /{name}/predict.")
    backend: str = Field(min_length=1, description="A registered backend name, e.g. 'chronos'.")
    model_type: str | None = Field(
        default=None, description="Optional; checked against the backend's model type.")
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    batching: BatchingPolicy = Field(default_factory=BatchingPolicy)
    cache: CachePolicy = Field(default_factory=CachePolicy)
    features: FeatureStoreSpec | None = Field(
        default=None, description="A Feast feature store: requests may then name features "
        "instead of sending the data (docs/feast.md).")
    resources: ResourcePolicy = Field(default_factory=ResourcePolicy)
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="Per-request deadline; defaults to server.request_timeout_s.")
    limits: dict[str, Any] = Field(
        default_factory=dict, description="How much work one request may ask of this model: "
        "the model type's limits (time_series: max_horizon, max_num_samples, max_history, "
        "max_forecast_values; text_to_image and image_to_image: max_pixels, max_steps, "
        "max_images; weather: max_steps). Unset ones keep the model type's defaults; a "
        "request over one is a 422 naming the field and the limit.")
    warmup: bool = Field(
        default=True, description="After loading, predict the backend's own sample "
        "requests and serve the model only if it answers them (a broken load is then "
        "reported failed, not served). false: served as soon as loaded.")
    @model_validator(mode="after")
    def _not_reserved(self) -> ModelSpec:
        check_not_reserved(self.name)
        return self


def read_config(path: str | Path) -> Any:
    """The YAML of a config file, not yet validated; ConfigError names the file, and for
    bad YAML the line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}"
                          + (f" ({context})" if context else "")) from None


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
    if spec.limits and cls.model_type in registry.contracts:
        model_limits(spec, registry.contract(cls.model_type).request)
    try:
        return cls(**spec.backend_kwargs)
    except ValidationError as exc:
        lines = "\n".join(f"  backend_kwargs.{_loc(e['loc'])}: " + (
            _unknown_setting(list(e["loc"]), cls.Settings) if e["type"] == "extra_forbidden"
            else e["msg"]) for e in exc.errors())
        raise ConfigError(f"{where}: backend_kwargs are invalid for backend "
                          f"{spec.backend!r}:\n{lines}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: backend_kwargs: {exc}") from None


def model_limits(spec: ModelSpec, request_type: type[BaseRequest]) -> WorkLimits:
    """The spec's `limits` over its model type's defaults; ConfigError names each setting."""
    try:
        return request_type.Limits.model_validate(spec.limits)
    except ValidationError as exc:
        lines = "\n".join(f"  limits.{_loc(e['loc'])}: " + (
            "unknown limit for this model type; it has: "
            + ", ".join(request_type.Limits.model_fields)
            if e["type"] == "extra_forbidden" else e["msg"]) for e in exc.errors())
        raise ConfigError(f"model {spec.name!r}: limits are invalid:\n{lines}") from None


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def format_errors(exc: ValidationError, data: dict[str, Any],
                  root: type[BaseModel]) -> list[str]:
    """One line per error, naming the model or pipeline (`models[1] 'forecaster': `) and
    the field; an unknown setting gets the nearest known one and the list of those allowed
    there. `root`: the model `data` was validated as (a whole config: sheaf-server's
    `SheafConfig`)."""
    models = data.get("models") if isinstance(data.get("models"), list) else []
    pipelines = data.get("pipelines") if isinstance(data.get("pipelines"), list) else []
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        prefix = ""
        if len(loc) >= 2 and loc[0] in ("models", "pipelines") and isinstance(loc[1], int):
            index = loc[1]
            entries: list[Any] = (models if loc[0] == "models" else pipelines) or []
            entry = entries[index] if index < len(entries) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            prefix = f"{loc[0]}[{index}]" + (f" {name!r}" if name else "") + ": "
            loc = loc[2:]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _unknown_setting(list(error["loc"]), root)
        field = f"{_loc(tuple(loc))}: " if loc else ""
        lines.append(f"{prefix}{field}{message}")
    return lines


def _unknown_setting(loc: list[Any], root: type[BaseModel]) -> str:
    allowed = _settings_at(loc[:-1], root)
    if not allowed:
        return "unknown setting (check the spelling)"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown setting; {hint}settings here: {', '.join(allowed)}"


def _settings_at(loc: list[Any], model: type[BaseModel]) -> list[str]:
    """The field names of the pydantic model found at `loc` under `model` (list indexes
    skipped, Optional/list/dict annotations looked through); [] where none is found."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
        if current is None:
            return []
    return list(current.model_fields) if current else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


#: Names that moved to `sheaf_server.settings` (sheaf-core owns no HTTP and no Ray).
MOVED_TO_SERVER = ("AutoscalingPolicy", "RayActorOptions", "RayPolicy", "RayServeSettings",
                   "SageMakerSettings", "ServerSettings", "SheafConfig", "load_config",
                   "parse_config")


def moved(module: str, name: str) -> Any:
    """A name that moved to sheaf-server, with a DeprecationWarning (for one release)."""
    import warnings

    warnings.warn(f"{module}.{name} moved to sheaf_server.settings.{name} (sheaf-core owns "
                  "no HTTP and no Ray settings); the old path goes in the next release",
                  DeprecationWarning, stacklevel=3)
    try:
        from sheaf_server import settings
    except ImportError:
        raise ImportError(f"{name} is sheaf-server's now: pip install sheaf-server") from None
    return getattr(settings, name)


def __getattr__(name: str) -> Any:
    if name in MOVED_TO_SERVER:
        return moved(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
