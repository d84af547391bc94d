"""What a model's Ray deployment gets from its spec: defaults that let batches fill and
keep every queue bounded, and YAML errors that name the field."""

from __future__ import annotations

import pytest

from sheaf_core import ConfigError, ModelSpec
from sheaf_server.ray.options import cluster_env, deployment_options, with_forwarded_env
from sheaf_server.settings import RayServeSettings, ServedModelSpec, parse_config


def test_defaults_let_a_batch_fill_and_bound_the_queue() -> None:
    options = deployment_options(ModelSpec(name="m", backend="baseline",
                                           batching={"max_batch_size": 16,
                                                     "max_queue_size": 100}))
    assert options["max_ongoing_requests"] == 32  # Ray's default of 5 would cap batches at 5
    assert options["max_queued_requests"] == 100  # Ray's default is unbounded
    assert options["num_replicas"] == 1
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_ray_settings_override_and_resources_fill_in() -> None:
    spec = ServedModelSpec(name="m", backend="baseline", resources={"num_gpus": 1, "memory": 2**30},
                     ray={"autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
                          "max_ongoing_requests": 8, "max_queued_requests": 50,
                          "ray_actor_options": {"num_cpus": 2, "accelerator_type": "L4"},
                          "runtime_env": {"env_vars": {"A": "1"}}})
    options = deployment_options(spec)
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["max_ongoing_requests"] == 8 and options["max_queued_requests"] == 50
    assert options["ray_actor_options"] == {
        "num_cpus": 2.0, "num_gpus": 1.0, "memory": 2**30, "accelerator_type": "L4",
        "runtime_env": {"env_vars": {"A": "1"}}}


@pytest.mark.parametrize(("ray", "message"), [
    ({"num_replicas": 2, "autoscaling_config": {}}, "set num_replicas or autoscaling_config"),
    ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas (3)"),
    ({"num_replicaz": 2}, "ray.num_replicaz: unknown setting"),
    ({"max_queued_requests": 0}, "ray.max_queued_requests"),
])
def test_bad_ray_settings_name_model_and_field(ray: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="models\\[0\\] 'fc'") as raised:
        parse_config({"models": [{"name": "fc", "backend": "baseline", "ray": ray}]})
    assert message in str(raised.value)


def test_the_cluster_environment_follows_the_settings() -> None:
    env = cluster_env(RayServeSettings())
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "sheaf_server.ray.http:middlewares"
    plain = cluster_env(RayServeSettings(throughput_optimized=False, haproxy=False))
    assert set(plain) == {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"}


def test_the_builders_otel_variables_reach_every_deployment_and_a_models_own_win() -> None:
    spec = ServedModelSpec(name="m", backend="baseline", ray={"runtime_env": {"env_vars": {
        "OTEL_SERVICE_NAME": "own"}}})
    options = with_forwarded_env(deployment_options(spec, RayServeSettings()), {
        "OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_SERVICE_NAME": "driver",
        "HOME": "/root"})
    env = options["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["OTEL_TRACES_EXPORTER"] == "otlp_proto_http"
    assert env["OTEL_SERVICE_NAME"] == "own" and "HOME" not in env
    assert "PROMETHEUS_MULTIPROC_DIR" in env
