"""`build_app(specs)`: a sheaf.yaml (or ModelSpecs) as a Ray Serve application."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray import serve
from ray.serve import Application

from sheaf_core.errors import ConfigError
from sheaf_core.registry import registry_with
from sheaf_core.spec import ModelSpec, ServerSettings, SheafConfig, check_spec, parse_config
from sheaf_server.ray.deployments import ModelReplica, SheafIngress
from sheaf_server.ray.options import INGRESS_NAME, deployment_options, ingress_options


def build_app(specs: Iterable[ModelSpec] | SheafConfig, *,
              settings: ServerSettings | None = None,
              plugins: Iterable[object] = ()) -> Application:
    """A Ray Serve application: one ingress deployment (the FastAPI app) and one deployment
    per model, wired by handles. Deploy it with `serve.run(app)`, or name this function's
    result in a Serve config's `import_path`.

    Specs are checked here, in the driver (unknown backend, bad kwargs → ConfigError),
    before anything is deployed.
    """
    if isinstance(specs, SheafConfig):
        settings = settings or specs.server
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
    models: dict[str, Any] = {
        spec.name: serve.deployment(ModelReplica).options(**deployment_options(spec))
        .bind(spec, settings, plugins)
        for spec in specs}
    ingress = serve.deployment(SheafIngress).options(**ingress_options(settings.ray))
    return ingress.bind(specs, settings, models, plugins)


def from_args(args: dict[str, Any]) -> Application:
    """Ray Serve application builder — the `import_path` of configs `sheaf-server build`
    writes: `args: {config: <a whole sheaf.yaml>}` becomes `build_app(config)`."""
    if not isinstance(args, dict) or "config" not in args:
        raise ConfigError("application args: expected {config: <the sheaf.yaml content>}, "
                          f"got {sorted(args) if isinstance(args, dict) else type(args)}")
    return build_app(parse_config(args["config"], source="application args.config"))
