"""`sheaf-server build`: a sheaf.yaml as a Ray Serve config file (what `serve deploy` and
KubeRay's `serveConfigV2` take), and optionally a KubeRay RayService manifest around it.

Ray's own `serve build` drops the arguments an application was bound with; this writes them
as the application's `args` (the whole sheaf config), so `import_path` rebuilds exactly these
ModelSpecs on the cluster. The `deployments` list repeats each model's Ray settings in Ray's
own vocabulary: ops can edit num_replicas, autoscaling or actor options there and redeploy;
Serve applies such overrides on top of the code's, without a rebuild.
"""

from __future__ import annotations

from typing import Any

from sheaf_core.registry import Registry
from sheaf_core.spec import SheafConfig
from sheaf_server.deploy import files, packages
from sheaf_server.ray.options import (
    cluster_env,
    deployment_options,
    ingress_options,
    pipeline_options,
    serve_logging,
)

#: `import_path` of the application builder: args {config: <sheaf config>} → Application.
IMPORT_PATH = "sheaf_server.ray.app:from_args"
RAY_VERSION = "2.60.0"
RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311"


def requirements(config: SheafConfig, registry: Registry | None = None) -> list[str]:
    """The pip requirements replicas need: sheaf-server with Ray, and the distribution of
    every plugin that provides a served backend or its model type, pinned to the versions
    installed here (`sheaf_server.deploy.packages`)."""
    return packages.requirements(config, "ray", registry)


def serve_config(config: SheafConfig, *, pip: bool = True, host: str = "0.0.0.0",
                 registry: Registry | None = None) -> dict[str, Any]:
    """The Ray Serve config (ServeDeploySchema) for `config`."""
    settings = config.server
    deployments = [_without_name_first(ingress_options(settings.ray))]
    deployments += [_without_name_first(deployment_options(spec, settings.ray))
                    for spec in config.models]
    deployments += [_without_name_first(pipeline_options(pipeline, settings.ray))
                    for pipeline in config.pipelines]
    application: dict[str, Any] = {
        "name": settings.ray.app_name,
        "route_prefix": settings.ray.route_prefix,
        "import_path": IMPORT_PATH,
        "args": {"config": config.model_dump(mode="json", exclude_defaults=True)},
        "deployments": deployments,
    }
    if pip:
        application["runtime_env"] = {"pip": requirements(config, registry)}
    log_config = serve_logging(settings.log_format)
    if log_config:
        application["logging_config"] = log_config
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": settings.port},
        "applications": [application],
    }


def rayservice(config: SheafConfig, *, name: str = "sheaf", image: str = RAY_IMAGE,
               pip: bool = True, registry: Registry | None = None) -> dict[str, Any]:
    """A KubeRay RayService: the Serve config as `serveConfigV2`, and a cluster whose
    containers carry the environment sheaf's Ray host needs (docs/ray.md)."""
    serve = serve_config(config, pip=pip, registry=registry)
    env = [{"name": k, "value": v} for k, v in sorted(cluster_env(config.server.ray).items())]
    gpus = sum(_gpus(deployment_options(spec)) for spec in config.models)
    worker_limits: dict[str, Any] = {"cpu": "4", "memory": "16Gi"}
    if gpus:
        worker_limits["nvidia.com/gpu"] = str(int(-(-gpus // 1)))
    ports = [{"containerPort": 6379, "name": "gcs-server"},
             {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"},
             {"containerPort": config.server.port, "name": "serve"}]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": dump(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"spec": {"containers": [{
                        "name": "ray-head", "image": image, "env": env, "ports": ports,
                        "resources": {"limits": {"cpu": "2", "memory": "8Gi"},
                                      "requests": {"cpu": "2", "memory": "8Gi"}}}]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "models", "replicas": 1, "minReplicas": 1, "maxReplicas": 4,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [{
                        "name": "ray-worker", "image": image, "env": env,
                        "resources": {"limits": worker_limits, "requests": worker_limits}}]}},
                }],
            },
        },
    }


def dump(document: dict[str, Any]) -> str:
    return files.dump(document)


def _without_name_first(options: dict[str, Any]) -> dict[str, Any]:
    return {"name": options["name"], **{k: v for k, v in options.items() if k != "name"}}


def _gpus(options: dict[str, Any]) -> float:
    """GPUs a model's deployment can claim at most: per replica times the most replicas."""
    replicas = options.get("num_replicas") or options["autoscaling_config"]["max_replicas"]
    return float(options["ray_actor_options"].get("num_gpus") or 0) * replicas
