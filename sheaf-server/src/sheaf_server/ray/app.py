"""`build_app(specs)`: a sheaf.yaml (or ModelSpecs) as a Ray Serve application."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

from ray import serve
from ray.serve import Application, Deployment

from sheaf_core.errors import ConfigError
from sheaf_core.pipeline_spec import PipelineSpec, plan_pipelines
from sheaf_core.registry import registry_with
from sheaf_core.spec import ModelSpec, check_spec
from sheaf_server import __version__
from sheaf_server.ray.deployments import ModelReplica, PipelineReplica, SheafIngress
from sheaf_server.ray.options import (
    INGRESS_NAME,
    deployment_options,
    ingress_options,
    pipeline_options,
    serve_logging,
    with_forwarded_env,
)
from sheaf_server.settings import JobSettings, ServerSettings, SheafConfig, parse_config


def build_app(specs: Iterable[ModelSpec] | SheafConfig, *,
              settings: ServerSettings | None = None,
              plugins: Iterable[object] = ()) -> Application:
    """A Ray Serve application: one ingress deployment (the FastAPI app) and one deployment
    per model, wired by handles. Deploy it with `serve.run(app)`, or name this function's
    result in a Serve config's `import_path`.

    Specs are checked here, in the driver (unknown backend, bad kwargs → ConfigError),
    before anything is deployed.
    """
    pipelines: list[PipelineSpec] = []
    jobs: JobSettings | None = None
    if isinstance(specs, SheafConfig):
        settings = settings or specs.server
        pipelines = list(specs.pipelines)
        jobs = specs.jobs
        specs = specs.models
    specs = list(specs)
    settings = settings or ServerSettings()
    plugins = tuple(plugins)
    registry = registry_with(plugins)
    for spec in specs:
        if spec.name == INGRESS_NAME:
            raise ConfigError(f"model name {INGRESS_NAME!r} is taken by the Ray ingress "
                              "deployment; pick another")
        check_spec(spec, registry)
    plugin_names = [getattr(p, "__name__", type(p).__qualname__) for p in plugins]
    log_config = serve_logging(settings.log_format)
    log_options: dict[str, Any] = {"logging_config": log_config} if log_config else {}
    models: dict[str, Any] = {
        spec.name: _deployment(ModelReplica).options(
            **with_forwarded_env(deployment_options(spec, settings.ray)), **log_options,
            user_config={"spec": spec.model_dump(mode="json")},
            version=code_version(settings, plugin_names), _internal=True)
        .bind(settings, plugins)
        for spec in specs}
    model_types = {spec.name: registry.backend(spec.backend).model_type for spec in specs}
    plan_pipelines(pipelines, model_types, registry)  # ConfigError names pipeline and node
    for pipeline in pipelines:
        models[pipeline.name] = _deployment(PipelineReplica).options(
            **with_forwarded_env(pipeline_options(pipeline, settings.ray)), **log_options,
            version=code_version(settings, plugin_names, pipeline), _internal=True,
        ).bind(pipeline, model_types, settings, {name: models[name] for name in model_types},
               plugins)
    ingress = _deployment(SheafIngress).options(
        **with_forwarded_env(ingress_options(settings.ray)), **log_options,
        user_config={"specs": [spec.model_dump(mode="json") for spec in specs]},
        version=code_version(settings, plugin_names, model_types, pipelines), _internal=True)
    return ingress.bind(specs, settings, models, plugins, pipelines, jobs)


def code_version(*parts: Any) -> str:
    """A deployment's version as Serve sees it: what a replica cannot change without a
    restart (server settings, plugins, and for the ingress the routes). Serve restarts
    replicas when it changes; otherwise a redeploy only hands replicas the new user_config
    (`reconfigure`), which is how a model is hot-swapped without restarting anything.
    Unset, `serve.run` would draw a random version and restart every replica on every
    redeploy. (Apps deployed from a config file get Serve's own version, a hash of the
    import path and args.)"""
    encoded = json.dumps([__version__, *parts], sort_keys=True,
                         default=lambda o: o.model_dump(mode="json")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def from_args(args: dict[str, Any]) -> Application:
    """Ray Serve application builder — the `import_path` of configs `sheaf-server build`
    writes: `args: {config: <a whole sheaf.yaml>}` becomes `build_app(config)`."""
    if not isinstance(args, dict) or "config" not in args:
        raise ConfigError("application args: expected {config: <the sheaf.yaml content>}, "
                          f"got {sorted(args) if isinstance(args, dict) else type(args)}")
    return build_app(parse_config(args["config"], source="application args.config"))


def _deployment(cls: type) -> Deployment:
    """`serve.deployment(cls)`, typed: its overloads read a class as a decorator's options."""
    return cast(Deployment, serve.deployment(cls))
