"""ModelSpec → Ray Serve deployment options. Pure data: no Ray import, so `sheaf-server
build` and the tests can read what a deployment will get without a cluster."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from sheaf_core.pipeline_spec import PipelineSpec
from sheaf_core.spec import ModelSpec
from sheaf_server.settings import RayServeSettings, ray_policy

#: Ray's own default, too low for batching: a replica would never see a full batch.
RAY_DEFAULT_MAX_ONGOING = 5


def max_ongoing_requests(spec: ModelSpec) -> int:
    """Calls one replica takes at once. Default: twice the batch size (at least Ray's 5),
    so one batch can fill while the previous one runs."""
    ongoing = ray_policy(spec).max_ongoing_requests
    if ongoing is not None:
        return ongoing
    size = spec.batching.max_batch_size if spec.batching.enabled else 1
    return max(RAY_DEFAULT_MAX_ONGOING, 2 * size)


def actor_options(spec: ModelSpec) -> dict[str, Any]:
    """`ray_actor_options`: the Ray-specific values, falling back to `resources`."""
    ray, generic = ray_policy(spec).ray_actor_options, spec.resources
    options: dict[str, Any] = {
        "num_cpus": ray.num_cpus if ray.num_cpus is not None else generic.num_cpus,
        "num_gpus": ray.num_gpus if ray.num_gpus is not None else generic.num_gpus,
    }
    memory = ray.memory if ray.memory is not None else generic.memory
    if memory is not None:
        options["memory"] = memory
    if ray.accelerator_type:
        options["accelerator_type"] = ray.accelerator_type
    if ray.resources:
        options["resources"] = dict(ray.resources)
    if ray_policy(spec).runtime_env:
        options["runtime_env"] = dict(ray_policy(spec).runtime_env)
    return options


def deployment_options(spec: ModelSpec,
                       settings: RayServeSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for `Deployment.options(...)` of this model's deployment; with the
    app's `settings`, also the environment every sheaf process of the app shares."""
    ray = ray_policy(spec)
    options: dict[str, Any] = {
        "name": spec.name,
        "max_ongoing_requests": max_ongoing_requests(spec),
        "max_queued_requests": ray.max_queued_requests or spec.batching.max_queue_size,
        "ray_actor_options": actor_options(spec),
        "graceful_shutdown_timeout_s": ray.graceful_shutdown_timeout_s,
    }
    if ray.autoscaling_config is not None:
        options["autoscaling_config"] = ray.autoscaling_config.model_dump(exclude_none=True)
    else:
        options["num_replicas"] = ray.num_replicas or 1
    return _with_app_env(options, settings)


def pipeline_options(spec: PipelineSpec, settings: RayServeSettings) -> dict[str, Any]:
    """A pipeline's deployment: it only awaits its nodes and combines (cheap), so it takes
    as many requests at once as an ingress replica and reserves no CPU, like the ingress."""
    return _with_app_env({
        "name": spec.name,
        "num_replicas": settings.ingress_replicas,
        "max_ongoing_requests": settings.ingress_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.ingress_num_cpus},
    }, settings)


INGRESS_NAME = "SheafIngress"


def ingress_options(settings: RayServeSettings) -> dict[str, Any]:
    """Options of the HTTP ingress deployment (FastAPI app, routes to model handles)."""
    return _with_app_env({
        "name": INGRESS_NAME,
        "num_replicas": settings.ingress_replicas,
        "max_ongoing_requests": settings.ingress_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.ingress_num_cpus},
    }, settings)


def metrics_dir(settings: RayServeSettings) -> str:
    """Where the app's processes on a node write their Prometheus values, for the
    ingress's GET /metrics to sum (prometheus-client's multiprocess mode)."""
    return settings.metrics_dir or os.path.join(tempfile.gettempdir(), "sheaf-metrics",
                                                settings.app_name)


def _with_app_env(options: dict[str, Any], settings: RayServeSettings | None) -> dict[str, Any]:
    """Add the environment all the app's processes share (a runtime_env's own env_vars
    win) to a deployment's options."""
    if settings is None:
        return options
    return _with_env(options, {"PROMETHEUS_MULTIPROC_DIR": metrics_dir(settings)})


def _with_env(options: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """`env` added to a deployment's runtime_env env_vars; values already there win."""
    if not env:
        return options
    actor = options.setdefault("ray_actor_options", {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**env, **(runtime_env.get("env_vars") or {})}
    actor["runtime_env"] = runtime_env
    return options


def cluster_env(settings: RayServeSettings) -> dict[str, str]:
    """Environment a Ray cluster needs, set before it starts: the ingress mode chosen, and
    sheaf's middleware on Ray's HTTP servers (one X-Request-ID per response)."""
    env = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "sheaf_server.ray.http:middlewares"}
    if settings.throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    if settings.haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    return env


#: Environment variables the app's processes take from the process that builds the app
#: (`build_app`), so tracing set up for `sheaf-server serve --runtime ray` reaches every
#: replica, also on a cluster started elsewhere (docs/observability.md).
FORWARDED_ENV_PREFIX = "OTEL_"
#: ... and these, which `sheaf-server serve` sets to keep progress bars out of the logs.
FORWARDED_ENV = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


def with_forwarded_env(options: dict[str, Any],
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Add the builder's OTEL_* variables (and FORWARDED_ENV) to a deployment's
    runtime_env (its own env_vars win). Not used for `sheaf-server build`: a written config
    should not carry one shell's environment (exporter headers may hold credentials)."""
    environ = os.environ if environ is None else environ
    return _with_env(options, {k: v for k, v in environ.items()
                               if k.startswith(FORWARDED_ENV_PREFIX) or k in FORWARDED_ENV})


def serve_logging(log_format: str) -> dict[str, Any] | None:
    """Serve's `logging_config` for the app's deployments: `server.log_format: json` makes
    every replica's log file JSON lines (sheaf's records, access records included, go to
    the same file: `sheaf_server.ray.logs`). None: Serve's default (text)."""
    return {"encoding": "JSON"} if log_format == "json" else None
