"""sheaf.yaml: loadable from YAML and Python alike; errors name the model and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sheaf_core import ConfigError, ModelSpec, build_backend
from sheaf_server.settings import ServedModelSpec, SheafConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sheaf.yaml"
    path.write_text(text)
    return path


def test_yaml_and_python_give_the_same_spec(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
models:
  - name: forecaster
    backend: baseline
    backend_kwargs: {season_length: 7}
    batching: {max_batch_size: 16, max_wait_ms: 5, bucket_by: [horizon]}
    resources: {num_cpus: 2}
server: {port: 9000, default_model: forecaster}
"""))
    assert config.models[0] == ServedModelSpec(
        name="forecaster", backend="baseline", backend_kwargs={"season_length": 7},
        batching={"max_batch_size": 16, "max_wait_ms": 5, "bucket_by": ["horizon"]},
        resources={"num_cpus": 2})
    assert config.server.port == 9000


def test_errors_name_the_model_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, """
models:
  - name: good
    backend: baseline
  - name: forecaster
    backend: baseline
    batching: {max_batch_size: 0, max_wiat_ms: 3}
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "models[1] 'forecaster': batching.max_batch_size" in message
    assert "models[1] 'forecaster': batching.max_wiat_ms: unknown setting" in message


@pytest.mark.parametrize("text, expected", [
    ("models: []", "models"),
    ("models:\n  - {name: a, backend: baseline}\n  - {name: a, backend: baseline}",
     "two models or pipelines are named 'a'"),
    ("models:\n  - {name: health, backend: baseline}", "reserved"),
    ("models:\n  - {name: a, backend: baseline}\nserver: {default_model: b}",
     "server.default_model 'b'"),
    ("models: [", "not valid YAML"),
])
def test_bad_files_fail_with_a_message(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_backend_kwargs_are_checked_at_start_naming_model_and_kwarg() -> None:
    spec = ModelSpec(name="fc", backend="baseline", backend_kwargs={"seasn_length": 7})
    with pytest.raises(ConfigError, match=r"(?s)model .fc.*backend_kwargs\.seasn_length"):
        build_backend(spec)


def test_model_type_is_checked_against_the_backend() -> None:
    spec = ModelSpec(name="fc", backend="baseline", model_type="weather")
    with pytest.raises(ConfigError, match="model_type: is 'weather'"):
        build_backend(spec)


def test_config_round_trips_through_python() -> None:
    config = SheafConfig(models=[ModelSpec(name="a", backend="baseline")])
    assert SheafConfig.model_validate(config.model_dump()) == config


def test_limits_are_checked_against_the_model_type_naming_each() -> None:
    with pytest.raises(ConfigError) as info:
        build_backend(ModelSpec(name="f", backend="baseline",
                                limits={"max_horizn": 10, "max_num_samples": 0}))
    message = str(info.value)
    assert "model 'f'" in message and "limits.max_horizn: unknown limit" in message
    assert "max_forecast_values" in message  # the limits it has
    assert "limits.max_num_samples: Input should be greater than or equal to 1" in message
    build_backend(ModelSpec(name="f", backend="baseline", limits={"max_horizon": 48}))
