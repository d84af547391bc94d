"""Every problem of a config in one run, so that fixing a sheaf.yaml takes one round trip
instead of one per mistake: its structure (every field pydantic rejects), each model's
backend (unknown name, wrong model type, bad `backend_kwargs` or `limits`), the pipelines
over the models, and — where the models will load on this machine — each backend's
`preflight()` (weights that must exist here).

`sheaf-server validate` reports them all; `serve` and `build` refuse to start on any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sheaf_core.errors import ConfigError
from sheaf_core.pipeline_spec import plan_pipeline
from sheaf_core.registry import Registry, default_registry
from sheaf_core.spec import ModelSpec, build_backend, format_errors, read_config
from sheaf_server.settings import ServedModelSpec, SheafConfig


def check_config_file(path: str | Path, registry: Registry | None = None, *,
                      local_files: bool = True) -> SheafConfig:
    """The config in `path`, checked whole; ConfigError lists every problem found.

    When the structure is invalid, each model entry that is valid on its own is still
    checked against its backend, so the report covers every model."""
    data = read_config(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'models' list, got "
                          f"{type(data).__name__}")
    try:
        config = SheafConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(exc, data, SheafConfig)
        for spec in _valid_entries(data.get("models")):
            problems += _model_problems(spec, registry or default_registry(), local_files)
        raise _error(str(path), problems) from None
    check_config(config, registry, local_files=local_files, source=str(path))
    return config


def check_config(config: SheafConfig, registry: Registry | None = None, *,
                 local_files: bool = True, source: str = "config") -> None:
    """ConfigError listing every problem of every model and pipeline of `config`.
    `local_files`: also run each backend's `preflight()` (False when the models load on
    other machines, e.g. a remote Ray cluster, where paths need not exist here)."""
    registry = registry or default_registry()
    problems: list[str] = []
    types: dict[str, str] = {}
    for spec in config.models:
        problems += _model_problems(spec, registry, local_files, types)
    broken = {spec.name for spec in config.models} - set(types)
    for pipeline in config.pipelines:
        if broken & set(node.model for node in pipeline.nodes.values()):
            continue  # checked once its models are fixed: "not a served model" would mislead
        try:
            plan_pipeline(pipeline, types, registry)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise _error(source, problems)


def _model_problems(spec: ModelSpec, registry: Registry, local_files: bool,
                    types: dict[str, str] | None = None) -> list[str]:
    try:
        backend = build_backend(spec, registry)
    except ConfigError as exc:
        return [str(exc)]
    if types is not None:
        types[spec.name] = backend.model_type
    if not local_files:
        return []
    return [f"model {spec.name!r}: backend_kwargs.{p.field}: {p.message}"
            for p in backend.preflight()]


def _valid_entries(models: Any) -> list[ModelSpec]:
    entries: list[ModelSpec] = []
    for entry in models if isinstance(models, list) else []:
        try:
            entries.append(ServedModelSpec.model_validate(entry))
        except ValidationError:
            continue  # its problems are in the structural report already
    return entries


def _error(source: str, problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
    lines = "\n".join("  " + problem.replace("\n", "\n  ") for problem in problems)
    return ConfigError(f"{source} has {count}:\n{lines}")
