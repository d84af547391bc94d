"""`sheaf-server`: serve a sheaf.yaml, list plugins, write the OpenAPI document, check a config.

Exit codes: 0 ok, 2 bad configuration or usage (the message names model and field), 3 a
model failed to load while `server.exit_on_load_failure` is on (default with one model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sheaf_core.config_check import check_config, check_config_file
from sheaf_core.errors import ConfigError, SheafError
from sheaf_core.registry import default_registry
from sheaf_core.spec import SheafConfig, load_config
from sheaf_core.versions import VersionAction
from sheaf_server.defaults import default_config
from sheaf_server.logs import configure_logging, silence_progress_bars
from sheaf_server.telemetry import configure_tracing

if TYPE_CHECKING:
    from sheaf_server.model_server import ModelServer

log = logging.getLogger("sheaf-server")  # the text format shows "sheaf-server: ..."
SAGEMAKER_PORT = 8080
SAGEMAKER_CONFIG = "/opt/ml/model/sheaf.yaml"
CONFIG_ENV = "SHEAF_CONFIG"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(f"sheaf-server: configuration error: {exc}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The `sheaf-server` executable: `main()`, then exit without the interpreter's
    teardown. Everything is stopped by then; what the teardown would add is noise — triton
    (imported by torch 2.15) prints a nanobind leak report of some 600 lines to stderr
    there, which is not a log line (not JSON under `log_format: json`) and reads like a
    crash (triton-lang/triton#11552, fixed after triton 3.9). So flush what is pending
    — spans, log handlers, stdout — and leave."""
    code = main()
    try:
        from opentelemetry import trace

        shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
        if shutdown is not None:
            shutdown()  # exports the spans still batched
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sheaf-server", description=__doc__)
    parser.add_argument("--version", action=VersionAction, distribution="sheaf-server")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="serve the models of a config over HTTP")
    serve.add_argument("config", nargs="?", help="sheaf.yaml (default: $SHEAF_CONFIG, else the "
                       "embedded baseline forecaster)")
    serve.add_argument("--host", help="bind address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: server.port, 8000)")
    serve.add_argument("--sagemaker", action="store_true",
                       help="SageMaker container contract: 0.0.0.0:8080, config from "
                       f"$SHEAF_CONFIG or {SAGEMAKER_CONFIG}")
    serve.add_argument("--runtime", choices=("asgi", "ray"), default="asgi",
                       help="asgi: one uvicorn process (default); ray: Ray Serve, one "
                       "deployment per model (needs sheaf-server[ray])")
    serve.add_argument("--address", help="with --runtime ray: the Ray cluster to join "
                       "(e.g. ray://head:10001 or auto); default: start a local one")
    serve.add_argument("--log-level", default="info", type=str.lower,
                       choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(run=_serve)

    plugins = commands.add_parser("plugins", help="list discovered plugins, backends and "
                                  "model types, and plugins that failed to load")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=_plugins)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document (loads no model)")
    openapi.add_argument("config", nargs="?", help="sheaf.yaml (default: embedded baseline)")
    openapi.add_argument("-o", "--output", help="file to write (default: stdout)")
    openapi.set_defaults(run=_openapi)

    build = commands.add_parser("build", help="write a Ray Serve config (serve deploy, "
                                "KubeRay serveConfigV2) or, with --kuberay, a RayService")
    build.add_argument("config", help="sheaf.yaml")
    build.add_argument("-o", "--output", help="file to write (default: stdout)")
    build.add_argument("--kuberay", action="store_true", help="a KubeRay RayService manifest "
                       "around the Serve config")
    build.add_argument("--no-pip", dest="pip", action="store_false", help="no runtime_env "
                       "pip list (the cluster image already has sheaf and its plugins)")
    build.add_argument("--image", help="container image of the RayService (--kuberay)")
    build.add_argument("--name", default="sheaf", help="RayService name (--kuberay)")
    build.set_defaults(run=_build)

    validate = commands.add_parser("validate", help="check a config, its backends' kwargs "
                                   "and weights paths; reports every problem at once")
    validate.add_argument("config")
    validate.add_argument("--skip-files", dest="local_files", action="store_false",
                          help="do not check that weights paths exist on this machine (a "
                          "config for another machine or a cluster)")
    validate.set_defaults(run=_validate)
    return parser


def _config_path(path: str | None, sagemaker: bool = False) -> str | None:
    """The config file to serve: the argument, $SHEAF_CONFIG, SageMaker's; None: embedded."""
    path = path or os.environ.get(CONFIG_ENV)
    if path is None and sagemaker and Path(SAGEMAKER_CONFIG).exists():
        path = SAGEMAKER_CONFIG
    return path


def _config(path: str | None) -> SheafConfig:
    path = _config_path(path)
    return load_config(path) if path else default_config()


def _serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (then drain); SIGHUP re-reads the config file and
    hot-swaps the models whose spec changed."""
    from sheaf_server.model_server import ModelServer

    path = _config_path(args.config, args.sagemaker)
    config = load_config(path) if path else default_config()
    settings = config.server
    configure_logging(args.log_level, settings.log_format)
    silence_progress_bars()  # before any backend imports its model library
    configure_tracing()  # from OTEL_* (off unless OTEL_TRACES_EXPORTER names an exporter)
    host = args.host or ("0.0.0.0" if args.sagemaker else settings.host)
    port = args.port if args.port is not None else (
        SAGEMAKER_PORT if args.sagemaker else settings.port)
    # Every problem at once, before anything binds or a cluster starts; weights paths are
    # checked here unless the models load on a remote cluster.
    check_config(config, local_files=args.runtime == "asgi" or args.address is None,
                 source=path or "the embedded config")
    # Tier 1 constructs every backend here: bad kwargs fail before anything binds.
    server = ModelServer(config, runtime=args.runtime, host=host, port=port,
                         address=args.address, log_level=args.log_level)
    signals = _StopSignals()
    try:
        url = server.start()
        where = " on Ray" if args.runtime == "ray" else ""
        log.info("serving %s%s at %s (docs at /docs; models load in the background, see "
                 "/ready)", ", ".join(m.name for m in config.models), where, url,
                 extra={"url": url})
        signals.serving = True
        exit_on_failure = settings.exit_on_load_failure
        if exit_on_failure is None:
            exit_on_failure = len(config.models) == 1
        code = _until_stopped(server, path, signals, exit_on_failure)
        log.info("draining")
    except _StoppedWhileStarting:
        log.info("stopped while starting")
        code = 0
    finally:
        server.stop()
    return code


class _StoppedWhileStarting(BaseException):
    """A stop signal came before the server was up: abandon the start and clean up. A
    BaseException, like KeyboardInterrupt: raised wherever the start is, it must not be
    swallowed by the `except Exception` of the library code it interrupts (Ray's was)."""


class _StopSignals:
    """SIGINT/SIGTERM/SIGHUP from the moment `serve` starts: a stop while starting (the Ray
    ingress may already answer before `start()` returns) abandons the start; once serving,
    every signal is queued for the loop in `_until_stopped`."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.serving = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._received)

    def _received(self, signum: int, _frame: object) -> None:
        self.queue.put(signum)  # seen by `_until_stopped` should the raise below be lost
        if not self.serving and signum != signal.SIGHUP:
            raise _StoppedWhileStarting


def _until_stopped(server: ModelServer, path: str | None, signals: _StopSignals,
                   exit_on_failure: bool) -> int:
    """Serve until a stop signal (0) — or, with `exit_on_failure`, until the first load of
    a model fails (3); watched only while models load: a later failed hot swap leaves the
    old version serving."""
    watching = exit_on_failure
    while server.alive:
        if watching:
            watching, failed = _load_outcome(server)
            if failed:
                log.error("%s; exiting with status 3 (server.exit_on_load_failure)", failed)
                return 3
        try:
            signum = signals.queue.get(timeout=0.5)
        except queue.Empty:
            continue
        if signum != signal.SIGHUP:
            return 0
        _reload(server, path)
    return 0


def _load_outcome(server: ModelServer) -> tuple[bool, str]:
    """(still loading, what failed): what failed names each failed model and its reason."""
    try:
        states = server.model_states()
    except Exception:  # the ingress may not answer yet: look again soon
        return True, ""
    failed = [f"model {name!r} failed ({s['reason']})" for name, s in states.items()
              if s["state"] == "failed"]
    return any(s["state"] == "loading" for s in states.values()), ", ".join(failed)


def _reload(server: ModelServer, path: str | None) -> None:
    if path is None:
        log.warning("SIGHUP: serving the embedded default config; nothing to reload")
        return
    try:
        changed = server.reload(load_config(path))
    except SheafError as exc:
        log.error("reload of %s not applied, still serving as before: %s", path, exc)
        return
    updated = ", ".join(changed) or "nothing (no model changed)"
    log.info("reloaded %s: updated %s", path, updated)


def _plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.json:
        print(json.dumps({
            "plugins": [vars(p) for p in registry.plugins],
            "backends": {n: {"model_type": e.cls.model_type, "plugin": e.plugin.name,
                             "distribution": e.plugin.distribution,
                             "version": e.plugin.version}
                         for n, e in sorted(registry.backends.items())},
            "model_types": {n: {"request": e.request.__name__, "response": e.response.__name__,
                                "distribution": e.plugin.distribution,
                                "version": e.plugin.version}
                            for n, e in sorted(registry.contracts.items())},
            "combiners": {n: {"model_type": e.cls.model_type, "plugin": e.plugin.name,
                              "distribution": e.plugin.distribution,
                              "version": e.plugin.version}
                          for n, e in sorted(registry.combiners.items())},
            "problems": registry.problems,
        }, indent=2))
        return 0
    print("Backends:")
    for name, entry in sorted(registry.backends.items()):
        print(f"  {name:<16} {entry.cls.model_type:<14} {entry.plugin.distribution} "
              f"{entry.plugin.version}")
    print("Model types:")
    for name, contract in sorted(registry.contracts.items()):
        print(f"  {name:<16} {contract.request.__name__:<24} {contract.plugin.distribution} "
              f"{contract.plugin.version}")
    print("Combiners:")
    for name, combiner in sorted(registry.combiners.items()):
        print(f"  {name:<16} {combiner.cls.model_type:<14} {combiner.plugin.distribution} "
              f"{combiner.plugin.version}")
    if registry.failed or registry.problems:
        print("Problems:")
        for plugin in registry.failed:
            print(f"  plugin {plugin.name!r} from {plugin.distribution} {plugin.version} "
                  f"failed to load: {plugin.error}")
        for problem in registry.problems.values():
            print(f"  {problem}")
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from sheaf_server.asgi.app import build_app

    document = json.dumps(build_app(_config(args.config)).openapi(), indent=2)
    if args.output:
        Path(args.output).write_text(document + "\n")
    else:
        print(document)
    return 0


def _build(args: argparse.Namespace) -> int:
    from sheaf_server.ray import serve_config

    config = load_config(args.config)
    check_config(config, local_files=False, source=args.config)  # paths are the cluster's
    if args.kuberay:
        document = serve_config.rayservice(config, name=args.name, pip=args.pip,
                                           image=args.image or serve_config.RAY_IMAGE)
    else:
        document = serve_config.serve_config(config, pip=args.pip)
    text = serve_config.dump(document)
    if args.output:
        Path(args.output).write_text(text)
        print(f"sheaf-server: wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = check_config_file(args.config, local_files=args.local_files)
    pipelines = f", {len(config.pipelines)} pipelines" if config.pipelines else ""
    print(f"{args.config}: ok ({len(config.models)} models{pipelines})")
    return 0


if __name__ == "__main__":
    run()
