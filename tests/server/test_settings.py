"""Host settings are sheaf-server's (`sheaf_server.settings`); sheaf-core's `ModelSpec` says
only what a model is. A sheaf.yaml keeps its shape, and code written against the old
import paths keeps working for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings

import pytest
from pydantic import ValidationError

from sheaf_core import ModelSpec
from sheaf_server import settings
from sheaf_server.settings import ServedModelSpec, SheafConfig, parse_config, ray_policy


@pytest.mark.parametrize(("module", "name"), [
    ("sheaf_core", "ServerSettings"), ("sheaf_core", "SheafConfig"),
    ("sheaf_core", "load_config"), ("sheaf_core.spec", "RayPolicy"),
    ("sheaf_core.spec", "RayServeSettings"), ("sheaf_core.spec", "parse_config")])
def test_an_old_import_path_still_works_with_a_deprecation_warning(module: str,
                                                                   name: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = getattr(importlib.import_module(module), name)
    assert found is getattr(settings, name)
    assert any(issubclass(w.category, DeprecationWarning) and "sheaf_server.settings" in
               str(w.message) for w in caught)


def test_the_old_config_check_module_still_imports() -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        from sheaf_core.config_check import check_config
    from sheaf_server.config_check import check_config as moved
    assert check_config is moved


def test_a_models_ray_section_is_the_servers_not_core_vocabulary() -> None:
    with pytest.raises(ValidationError, match="ray"):
        ModelSpec(name="m", backend="baseline", ray={"num_replicas": 2})  # type: ignore[call-arg]
    config = parse_config({"models": [{"name": "m", "backend": "baseline",
                                       "ray": {"num_replicas": 2}}],
                           "server": {"port": 9001}})
    assert isinstance(config.models[0], ServedModelSpec)
    assert ray_policy(config.models[0]).num_replicas == 2 and config.server.port == 9001


def test_plain_model_specs_are_served_with_rays_defaults() -> None:
    config = SheafConfig(models=[ModelSpec(name="m", backend="baseline",
                                           batching={"max_batch_size": 4})])
    served = config.models[0]
    assert isinstance(served, ServedModelSpec) and served.batching.max_batch_size == 4
    assert ray_policy(ModelSpec(name="m", backend="baseline")).num_replicas is None


def test_an_update_with_a_plain_model_spec_keeps_the_models_ray_section() -> None:
    from sheaf_server import ModelServer

    first = ServedModelSpec(name="m", backend="baseline", ray={"num_replicas": 2})
    with ModelServer(SheafConfig(models=[first]), port=0, log_level="warning") as server:
        server.update(ModelSpec(name="m", backend="baseline", timeout_s=9))
        updated = server.config.models[0]
    assert updated.timeout_s == 9 and ray_policy(updated).num_replicas == 2
