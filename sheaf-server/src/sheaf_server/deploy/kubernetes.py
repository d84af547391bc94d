"""Kubernetes manifests generated from a sheaf config — tier 1 (plain uvicorn in the pod)
or tier 2 (a single-node Ray head and Ray Serve in the pod), the pods scaled by a
HorizontalPodAutoscaler. Everything the manifests say comes from the specs and the
server settings, not from hand edits:

- the probes are the paths the server serves: liveness `GET /health` (the process
  answers), readiness `GET /ready` (every model loaded and warmed up), and a startupProbe
  on `/ready` that waits as long as the slowest model family takes to load;
- resources add up the models' `resources` (tier 1 runs every model in one process);
  `num_gpus` becomes an `nvidia.com/gpu` limit;
- `terminationGracePeriodSeconds` covers the preStop pause (so the endpoint stops sending
  before SIGTERM) and `server.drain_timeout_s`;
- the config travels in a ConfigMap mounted at /etc/sheaf (or is baked into the image),
  and its hash is a pod annotation, so that editing it rolls the pods;
- a config with `jobs:` adds the job workers (`sheaf-server worker`, a Deployment of their
  own, sized by the models they run) and a KEDA ScaledObject that scales them on each
  model's stream: the consumer group's lag (jobs not yet read — the trigger that wakes
  workers from zero; Redis 7+) and its pending entries (jobs read and still running),
  with the bounds and cooldown of `jobs.autoscaling`.

The objects are plain dicts (`manifests()`); `write(dir)` writes them as YAML files.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from sheaf_core.registry import Registry, default_registry
from sheaf_core.spec import ModelSpec
from sheaf_server import __version__
from sheaf_server.deploy.files import dump, dump_all, write_files
from sheaf_server.jobs.keys import GROUP, Keys, redis_url
from sheaf_server.settings import ServedModelSpec, SheafConfig, TLSSettings, served

Runtime = Literal["asgi", "ray"]
HpaMetric = Literal["cpu", "queue_depth"]

CONFIG_DIR = "/etc/sheaf"
CONFIG_PATH = f"{CONFIG_DIR}/sheaf.yaml"
TLS_DIR = "/etc/sheaf-tls"
#: The key of `api_keys_secret` that holds the KEY:SCOPE entries.
API_KEYS_ENTRY = "api-keys"
#: Seconds the pod keeps serving after it is marked terminating, so that endpoints and load
#: balancers stop routing to it before SIGTERM starts the drain.
PRESTOP_SECONDS = 5
#: Minutes a model family may take to load before the kubelet gives up on the pod (the
#: startupProbe); families not listed: DEFAULT_LOAD_MINUTES.
LOAD_MINUTES = {"text_to_image": 20, "image_to_image": 20, "weather": 20}
DEFAULT_LOAD_MINUTES = 5
#: Memory a pod asks for when no model states its own (`resources.memory`), and what the Ray
#: head adds in tier 2 (measured: ~1.7 GB RSS for a local cluster with Serve).
DEFAULT_MEMORY_MI = 2048
RAY_MEMORY_MI = 2048


@dataclass
class KubernetesServer:
    """The manifests of one sheaf server on Kubernetes: ConfigMap, Deployment, Service,
    HorizontalPodAutoscaler and PodDisruptionBudget.

        server = KubernetesServer(load_config("sheaf.yaml"), image="registry/sheaf:0.1.0")
        server.write("k8s/")        # then: kubectl apply -f k8s/
    """

    config: SheafConfig | list[ModelSpec]
    image: str = f"sheaf:{__version__}"
    name: str = "sheaf"
    runtime: Runtime = "asgi"
    replicas: int = 1
    max_replicas: int = 4
    hpa_metric: HpaMetric = "cpu"
    #: The config is in the image (at CONFIG_PATH): no ConfigMap.
    bake_config: bool = False
    namespace: str | None = None
    registry: Registry | None = None
    #: A `kubernetes.io/tls` Secret mounted at TLS_DIR; the config's `server.tls` points
    #: at it (tier 1 serves HTTPS; the probes follow).
    tls_secret: str | None = None
    #: A Secret whose `api-keys` entry becomes $SHEAF_API_KEYS (docs/security.md).
    api_keys_secret: str | None = None
    #: A Secret whose `url` entry becomes $SHEAF_REDIS_URL (a URL with a password) and
    #: whose `password` entry KEDA reads; else the config's `jobs.redis_url`.
    redis_secret: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, SheafConfig):
            self.config = SheafConfig(models=[served(spec) for spec in self.config])
        if not 1 <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas: {self.replicas} must be between 1 and max_replicas "
                             f"({self.max_replicas})")
        if self.tls_secret:
            if self.runtime == "ray":
                raise ValueError("tls_secret: Ray's HTTP proxy serves plain HTTP; terminate "
                                 "TLS at the Ingress or load balancer in front of it "
                                 "(docs/security.md)")
            server = self.config.server
            if server.tls is None:  # the mounted Secret's files
                tls = TLSSettings(certfile=f"{TLS_DIR}/tls.crt", keyfile=f"{TLS_DIR}/tls.key")
                self.config = self.config.model_copy(update={
                    "server": server.model_copy(update={"tls": tls})})

    @property
    def sheaf_config(self) -> SheafConfig:
        assert isinstance(self.config, SheafConfig)
        return self.config

    def config_yaml(self) -> str:
        """The config as the pods read it: what was given, defaults left out."""
        return dump(self.sheaf_config.model_dump(mode="json", exclude_defaults=True))

    def manifests(self) -> list[dict[str, Any]]:
        objects = [] if self.bake_config else [self._config_map()]
        objects += [self._deployment(), self._service(), self._hpa(), self._pdb()]
        if self.sheaf_config.jobs is not None:
            objects += [self._worker(), self._scaled_object()]
        return objects

    def files(self) -> dict[str, str]:
        """File name → YAML text, one file per object."""
        names = {"ConfigMap": "configmap.yaml", "Deployment": "deployment.yaml",
                 "Service": "service.yaml", "HorizontalPodAutoscaler": "hpa.yaml",
                 "PodDisruptionBudget": "pdb.yaml", "ScaledObject": "worker-keda.yaml"}
        def file(m: dict[str, Any]) -> str:
            if m["kind"] == "Deployment" and m["metadata"]["name"] == self._worker_name:
                return "worker-deployment.yaml"
            return names[m["kind"]]

        return {file(m): dump_all([m]) for m in self.manifests()}

    def write(self, directory: str | Path, *, force: bool = False) -> list[Path]:
        """Write `files()` into `directory`; refuses a directory holding other files
        unless `force` (nothing is written then)."""
        return write_files(directory, self.files(), force=force)

    # -- the objects ------------------------------------------------------------------

    def _metadata(self, name: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name or self.name, "labels": self._labels()}
        if self.namespace:
            meta["namespace"] = self.namespace
        return meta

    def _labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "sheaf", "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/version": __version__,
                "app.kubernetes.io/managed-by": "sheaf-server-build"}

    def _selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "sheaf", "app.kubernetes.io/instance": self.name}

    def _config_map(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": self._metadata(f"{self.name}-config"),
                "data": {"sheaf.yaml": self.config_yaml()}}

    def _deployment(self) -> dict[str, Any]:
        settings = self.sheaf_config.server
        port = settings.port
        http = {"path": "", "port": "http", **({"scheme": "HTTPS"} if settings.tls else {})}
        container: dict[str, Any] = {
            "name": "sheaf",
            "image": self.image,
            "args": ["serve", "--host", "0.0.0.0", "--port", str(port),
                     *(["--runtime", "ray"] if self.runtime == "ray" else [])],
            "env": [{"name": "SHEAF_CONFIG", "value": CONFIG_PATH}, *self._secret_env()],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "resources": self._resources(),
            "startupProbe": {"httpGet": {**http, "path": "/ready"}, "periodSeconds": 10,
                             "failureThreshold": self._load_minutes() * 6},
            "livenessProbe": {"httpGet": {**http, "path": "/health"}, "periodSeconds": 10,
                              "timeoutSeconds": 5, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {**http, "path": "/ready"}, "periodSeconds": 5,
                               "timeoutSeconds": 5, "failureThreshold": 2},
            "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}},
        }
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
        if not self.bake_config:
            volumes.append({"name": "config", "configMap": {"name": f"{self.name}-config"}})
            mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
        if self.tls_secret:
            volumes.append({"name": "tls", "secret": {"secretName": self.tls_secret}})
            mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        if self.runtime == "ray":  # Ray's object store lives in shared memory
            volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        if mounts:
            container["volumeMounts"] = mounts
        pod: dict[str, Any] = {
            "containers": [container],
            "terminationGracePeriodSeconds":
                PRESTOP_SECONDS + math.ceil(settings.drain_timeout_s) + 10,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "runAsGroup": 10001, "fsGroup": 10001},
        }
        if volumes:
            pod["volumes"] = volumes
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                       "prometheus.io/path": "/metrics",
                       **({"prometheus.io/scheme": "https"} if settings.tls else {}),
                       "sheaf.dev/config-sha256": hashlib.sha256(
                           self.config_yaml().encode()).hexdigest()}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._metadata(),
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": self._selector()},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {"metadata": {"labels": self._labels(),
                                          "annotations": annotations},
                             "spec": pod},
            },
        }

    def _secret_env(self) -> list[dict[str, Any]]:
        """Environment from Secrets (never their values: the cluster holds those)."""
        env: list[dict[str, Any]] = self._redis_env()
        if self.api_keys_secret:
            env.append({"name": "SHEAF_API_KEYS", "valueFrom": {"secretKeyRef": {
                "name": self.api_keys_secret, "key": API_KEYS_ENTRY}}})
        if self.sheaf_config.server.tls is not None:
            env.append({"name": "SHEAF_HEALTHCHECK_TLS", "value": "1"})
        return env

    def _resources(self, models: list[ServedModelSpec] | None = None,
                   ray: bool = False) -> dict[str, Any]:
        """Requests add up the models' needs (one process holds them all); memory and GPUs
        are limits too; CPU is not limited (a CPU limit throttles a batch mid-flight)."""
        if models is None:
            models, ray = self.sheaf_config.models, self.runtime == "ray"
        cpus = max(sum(spec.resources.num_cpus for spec in models), 0.5)
        stated = [spec.resources.memory for spec in models if spec.resources.memory]
        memory_mi = math.ceil(sum(stated) / 2**20) if stated else DEFAULT_MEMORY_MI
        if ray:
            memory_mi += RAY_MEMORY_MI
        gpus = math.ceil(sum(spec.resources.num_gpus for spec in models))
        requests = {"cpu": f"{math.ceil(cpus * 1000)}m", "memory": f"{memory_mi}Mi"}
        limits: dict[str, str] = {"memory": f"{memory_mi}Mi"}
        if gpus:
            limits["nvidia.com/gpu"] = str(gpus)
        return {"requests": requests, "limits": limits}

    def _load_minutes(self) -> int:
        registry = self.registry or default_registry()
        types = [registry.backend(spec.backend).model_type for spec in self.sheaf_config.models]
        return max(LOAD_MINUTES.get(t, DEFAULT_LOAD_MINUTES) for t in types)

    def _service(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": self._metadata(),
                "spec": {"selector": self._selector(), "type": "ClusterIP",
                         "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                    "protocol": "TCP"}]}}

    def _hpa(self) -> dict[str, Any]:
        """CPU utilisation by default; `queue_depth` scales on the requests waiting for a
        batch per pod (`sheaf_queue_depth` from /metrics, through the Prometheus adapter:
        docs/deployment.md has its rule)."""
        if self.hpa_metric == "cpu":
            metric: dict[str, Any] = {"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
        else:
            metric = {"type": "Pods", "pods": {
                "metric": {"name": "sheaf_queue_depth"},
                "target": {"type": "AverageValue", "averageValue": "8"}}}
        return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": self._metadata(),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": self.name},
                         "minReplicas": self.replicas, "maxReplicas": self.max_replicas,
                         "metrics": [metric],
                         "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}

    # -- job workers (a config with `jobs:`) -----------------------------------------------

    @property
    def _worker_name(self) -> str:
        return f"{self.name}-worker"

    def _worker_labels(self) -> dict[str, str]:
        """The server's labels with an instance of the workers' own, so that the server's
        Service and PodDisruptionBudget never select a worker pod."""
        return {**self._labels(), "app.kubernetes.io/instance": self._worker_name,
                "app.kubernetes.io/component": "job-worker"}

    def _job_models(self) -> list[str]:
        config = self.sheaf_config
        assert config.jobs is not None
        return list(config.jobs.models or [*(m.name for m in config.models),
                                           *(p.name for p in config.pipelines)])

    def _redis_env(self) -> list[dict[str, Any]]:
        if self.sheaf_config.jobs is None or not self.redis_secret:
            return []
        return [{"name": "SHEAF_REDIS_URL", "valueFrom": {"secretKeyRef": {
                    "name": self.redis_secret, "key": "url"}}},
                {"name": "SHEAF_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": self.redis_secret, "key": "password", "optional": True}}}]

    def _worker(self) -> dict[str, Any]:
        """`sheaf-server worker`: the models of `jobs.models` (and a named pipeline's
        members), no HTTP; SIGTERM finishes or gives back its jobs within
        `jobs.drain_timeout_s`, which the grace period covers."""
        config = self.sheaf_config
        jobs = config.jobs
        assert jobs is not None
        names = set(self._job_models())
        members = {n.model for p in config.pipelines if p.name in names
                   for n in p.nodes.values() if n.model}
        models = [m for m in config.models if m.name in names | members]
        container: dict[str, Any] = {
            "name": "worker", "image": self.image, "args": ["worker"],
            "env": [{"name": "SHEAF_CONFIG", "value": CONFIG_PATH}, *self._redis_env()],
            "resources": self._resources(models),
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}},
        }
        pod: dict[str, Any] = {
            "containers": [container],
            "terminationGracePeriodSeconds": math.ceil(jobs.drain_timeout_s) + 15,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "runAsGroup": 10001, "fsGroup": 10001},
        }
        annotations: dict[str, str] = {}
        if not self.bake_config:
            container["volumeMounts"] = [{"name": "config", "mountPath": CONFIG_DIR,
                                          "readOnly": True}]
            pod["volumes"] = [{"name": "config",
                               "configMap": {"name": f"{self.name}-config"}}]
            annotations["sheaf.dev/config-sha256"] = hashlib.sha256(
                self.config_yaml().encode()).hexdigest()
        selector = {k: v for k, v in self._worker_labels().items()
                    if k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
        metadata = {**self._metadata(self._worker_name), "labels": self._worker_labels()}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {
                "replicas": jobs.autoscaling.min_replicas,  # KEDA owns it from here
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": self._worker_labels(),
                                          **({"annotations": annotations}
                                             if annotations else {})},
                             "spec": pod},
            },
        }

    def _scaled_object(self) -> dict[str, Any]:
        """KEDA: per model stream, one trigger on the consumer group's lag (jobs nobody
        has read: it scales from zero) and one on its pending entries (jobs running)."""
        jobs = self.sheaf_config.jobs
        assert jobs is not None
        scaling = jobs.autoscaling
        keys = Keys(jobs.prefix)
        where = _redis_address(redis_url(jobs))
        triggers: list[dict[str, Any]] = []
        for model in self._job_models():
            common: dict[str, str] = {**where, "stream": keys.stream(model),
                                      "consumerGroup": GROUP}
            if self.redis_secret:
                common["passwordFromEnv"] = "SHEAF_REDIS_PASSWORD"
            triggers.append({"type": "redis-streams", "name": f"{model}-lag", "metadata": {
                **common, "lagCount": str(scaling.lag_per_replica),
                "activationLagCount": "0"}})
            triggers.append({"type": "redis-streams", "name": f"{model}-running",
                             "metadata": {**common, "pendingEntriesCount":
                                          str(scaling.pending_per_replica)}})
        return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {**self._metadata(self._worker_name),
                             "labels": self._worker_labels()},
                "spec": {"scaleTargetRef": {"name": self._worker_name},
                         "minReplicaCount": scaling.min_replicas,
                         "maxReplicaCount": scaling.max_replicas,
                         "cooldownPeriod": scaling.cooldown_s,
                         "pollingInterval": scaling.polling_interval_s,
                         "triggers": triggers}}

    def _pdb(self) -> dict[str, Any]:
        """At most one pod down for a voluntary disruption (a node drain): with one replica
        a drain still proceeds, with several the others keep serving."""
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": self._metadata(),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self._selector()}}}


def _redis_address(url: str) -> dict[str, str]:
    """KEDA's connection fields from a redis:// URL: host:port, database, TLS."""
    parts = urlsplit(url)
    fields = {"address": f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}",
              "databaseIndex": (parts.path or "/0").strip("/") or "0"}
    if parts.scheme == "rediss":
        fields["enableTLS"] = "true"
    return fields
