"""The embedded default configuration: the weight-free baseline forecaster, no download."""

from __future__ import annotations

from sheaf_server.settings import ServedModelSpec, SheafConfig

DEFAULT_MODEL_NAME = "baseline"


def default_config() -> SheafConfig:
    return SheafConfig(models=[ServedModelSpec(name=DEFAULT_MODEL_NAME, backend="baseline")])
