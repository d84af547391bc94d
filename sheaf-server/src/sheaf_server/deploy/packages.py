"""What an image or a Ray runtime_env must install to serve a config: the Sheaf packages,
the extras the config uses, and the distribution of every plugin that provides a served
backend or its model type — pinned to the versions installed here, where the config was
validated, so that what is deployed is what was tested."""

from __future__ import annotations

from importlib import metadata
from typing import Literal

from sheaf_core.registry import IN_PROCESS, Registry, default_registry
from sheaf_server.settings import SheafConfig

Runtime = Literal["asgi", "ray"]


def server_extras(config: SheafConfig, runtime: Runtime) -> list[str]:
    """sheaf-server's extras the config needs: `ray` for the Ray runtime, `feast` when a
    model reads features, `jobs` with a `jobs:` section."""
    extras = ["ray"] if runtime == "ray" else []
    if any(spec.features is not None for spec in config.models):
        extras.append("feast")
    if config.jobs is not None:
        extras.append("jobs")
    return extras


def core_extras(config: SheafConfig) -> list[str]:
    """sheaf-core's extras: `s3` when requests may name s3:// payloads or job results go
    to an s3:// prefix."""
    prefixes = list(config.server.payloads.allowed_uri_prefixes)
    if config.jobs is not None and config.jobs.results_uri:
        prefixes.append(config.jobs.results_uri)
    return ["s3"] if any(p.startswith("s3://") for p in prefixes) else []


def requirements(config: SheafConfig, runtime: Runtime = "asgi",
                 registry: Registry | None = None) -> list[str]:
    """Pinned pip requirements, sheaf-server and sheaf-core first, then the plugins.
    The registry must know every backend (the config was checked against it)."""
    registry = registry or default_registry()
    pins = {"sheaf-server": _pin("sheaf-server", server_extras(config, runtime)),
            "sheaf-core": _pin("sheaf-core", core_extras(config))}
    for spec in config.models:
        entry = registry.backends[spec.backend]
        contract = registry.contract(entry.cls.model_type)
        for plugin in (entry.plugin, contract.plugin):
            if plugin.distribution not in pins and plugin.distribution != IN_PROCESS:
                pins[plugin.distribution] = f"{plugin.distribution}=={plugin.version}"
    return list(pins.values())


def _pin(distribution: str, extras: list[str]) -> str:
    suffix = f"[{','.join(extras)}]" if extras else ""
    return f"{distribution}{suffix}=={metadata.version(distribution)}"
