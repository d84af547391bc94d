"""`sheaf-server build`: a sheaf.yaml as a Ray Serve config file (what `serve deploy` and
KubeRay's `serveConfigV2` take), and optionally a KubeRay RayService manifest around it.

Ray's own `serve build` drops the arguments an application was bound with; this writes them
as the application's `args` (the whole sheaf config), so `import_path` rebuilds exactly these
ModelSpecs on the cluster. The `deployments` list repeats each model's Ray settings in Ray's
own vocabulary: ops can edit num_replicas, autoscaling or actor options there and redeploy;
Serve applies such overrides on top of the code's, without a rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sheaf_core.registry import Registry
from sheaf_server.deploy import files, packages
from sheaf_server.ray.options import (
    cluster_env,
    deployment_options,
    ingress_options,
    pipeline_options,
    serve_logging,
)
from sheaf_server.settings import SheafConfig

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
                 pip_options: Sequence[str] = (),
                 registry: Registry | None = None) -> dict[str, Any]:
    """The Ray Serve config (ServeDeploySchema) for `config`. `pip`: a runtime_env that
    installs the pinned requirements on the cluster; `pip_options`: options for that
    install (`--index-url URL`, `--find-links URL`: where packages not on the public index
    are)."""
    settings = config.server
    application: dict[str, Any] = {
        "name": settings.ray.app_name,
        "route_prefix": settings.ray.route_prefix,
        "import_path": IMPORT_PATH,
        "args": {"config": config.model_dump(mode="json", exclude_defaults=True)},
        "deployments": [_without_name_first(options) for options in _deployments(config)],
    }
    if pip:
        packages_ = requirements(config, registry)
        application["runtime_env"] = {"pip": {
            "packages": packages_, "pip_install_options": list(pip_options)}
            if pip_options else packages_}
    log_config = serve_logging(settings.log_format)
    if log_config:
        application["logging_config"] = log_config
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": settings.port},
        "applications": [application],
    }


def _deployments(config: SheafConfig) -> list[dict[str, Any]]:
    settings = config.server.ray
    return ([ingress_options(settings)]
            + [deployment_options(spec, settings) for spec in config.models]
            + [pipeline_options(pipeline, settings) for pipeline in config.pipelines])


def rayservice(config: SheafConfig, *, name: str = "sheaf", image: str = RAY_IMAGE,
               gpu_image: str | None = None, pip: bool = True,
               pip_options: Sequence[str] = (),
               registry: Registry | None = None) -> dict[str, Any]:
    """A KubeRay RayService: the Serve config as `serveConfigV2`, a head that schedules no
    replica, and one autoscaled worker group per resource shape — each pod sized for one
    replica of its deployments, its group's bounds their replica counts summed — with
    Ray's in-tree autoscaler on. `image` must hold Ray and Sheaf (the image `sheaf-server
    build --target docker --runtime ray` describes), else `pip` installs Sheaf at deploy
    time; GPU groups run `gpu_image` (a CUDA torch; default `image`). Every container
    carries the environment sheaf's Ray host needs (docs/ray.md)."""
    serve = serve_config(config, pip=pip, pip_options=pip_options, registry=registry)
    env = [{"name": k, "value": v} for k, v in sorted(cluster_env(config.server.ray).items())]
    ports = [{"containerPort": 6379, "name": "gcs-server"},
             {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"},
             {"containerPort": config.server.port, "name": "serve"}]
    head = {"cpu": "2", "memory": "8Gi"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": dump(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"spec": {"containers": [{
                        "name": "ray-head", "image": image, "env": env, "ports": ports,
                        "resources": {"limits": head, "requests": head}}]}},
                },
                "workerGroupSpecs": [
                    _worker_group(shape, bounds, gpu_image or image if shape[1] else image,
                                  env)
                    for shape, bounds in _shapes(config).items()],
            },
        },
    }


#: Memory of a worker pod whose deployments state none (bytes).
DEFAULT_WORKER_MEMORY = 4 * 2**30


def _shapes(config: SheafConfig) -> dict[tuple[int, int, int], list[int]]:
    """A pod's shape — (CPUs, GPUs, MiB) for one replica, whole CPUs and GPUs — → [fewest,
    most] replicas of that shape, over every deployment (ingress and pipelines too)."""
    shapes: dict[tuple[int, int, int], list[int]] = {}
    for options in _deployments(config):
        actor = options["ray_actor_options"]
        shape = (max(1, math.ceil(float(actor.get("num_cpus") or 0))),
                 math.ceil(float(actor.get("num_gpus") or 0)),
                 math.ceil(int(actor.get("memory") or DEFAULT_WORKER_MEMORY) / 2**20))
        scaling = options.get("autoscaling_config") or {}
        fewest = options.get("num_replicas") or scaling.get("min_replicas", 1)
        most = options.get("num_replicas") or scaling.get("max_replicas", 1)
        bounds = shapes.setdefault(shape, [0, 0])
        bounds[0] += int(fewest)
        bounds[1] += int(most)
    return shapes


def _worker_group(shape: tuple[int, int, int], bounds: list[int], image: str,
                  env: list[dict[str, str]]) -> dict[str, Any]:
    """Pods sized for one replica of `shape`: Ray is told the same CPUs and GPUs, so a
    replica's actor fits one pod and the autoscaler adds pods as replicas are added."""
    cpus, gpus, memory_mi = shape
    resources = {"cpu": str(cpus), "memory": f"{memory_mi}Mi"}
    start = {"num-cpus": str(cpus)}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
        start["num-gpus"] = str(gpus)
    label = f"{cpus}cpu" + (f"-{gpus}gpu" if gpus else "") + f"-{memory_mi}mi"
    return {
        "groupName": f"workers-{label}",
        "replicas": bounds[0], "minReplicas": bounds[0], "maxReplicas": max(bounds[1], 1),
        "rayStartParams": start,
        "template": {"spec": {"containers": [{
            "name": "ray-worker", "image": image, "env": env,
            "resources": {"limits": resources, "requests": resources}}]}},
    }


def dump(document: dict[str, Any]) -> str:
    return files.dump(document)


def _without_name_first(options: dict[str, Any]) -> dict[str, Any]:
    return {"name": options["name"], **{k: v for k, v in options.items() if k != "name"}}
