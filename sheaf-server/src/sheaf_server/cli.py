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

from sheaf_core.errors import ConfigError, SheafError
from sheaf_core.registry import default_registry
from sheaf_core.versions import VersionAction
from sheaf_server.config_check import check_config, check_config_file
from sheaf_server.defaults import default_config
from sheaf_server.deploy.targets import (
    DEFAULT_IMAGE,
    TARGETS,
    BuildOptions,
    kuberay_document,
    ray_document,
)
from sheaf_server.deploy.targets import build as build_target
from sheaf_server.logs import configure_logging, silence_progress_bars
from sheaf_server.settings import SheafConfig, load_config
from sheaf_server.telemetry import configure_tracing

if TYPE_CHECKING:
    from sheaf_server.model_server import ModelServer

log = logging.getLogger("sheaf-server")  # the text format shows "sheaf-server: ..."
SAGEMAKER_PORT = 8080
SAGEMAKER_CONFIG = "/opt/ml/model/sheaf.yaml"
IMAGE_CONFIG = "/etc/sheaf/sheaf.yaml"  # baked into images by `sheaf-server build`
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
    _log_level(serve)
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="run the queued jobs of the config's models "
                                 "(its jobs: section; needs sheaf-server[jobs] and Redis)")
    worker.add_argument("config", nargs="?", help="sheaf.yaml with a jobs: section "
                        "(default: $SHEAF_CONFIG)")
    _log_level(worker)
    worker.set_defaults(run=_worker)

    jobs = commands.add_parser("jobs", help="submit, inspect, cancel and list jobs on a "
                               "server (needs sheaf-core[client])")
    jobs.add_argument("--url", default=os.environ.get("SHEAF_URL", "http://127.0.0.1:8000"),
                      help="the server (default: $SHEAF_URL, else http://127.0.0.1:8000)")
    jobs.add_argument("--api-key", help="API key (default: $SHEAF_API_KEY)")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="queue a request; prints the job id")
    submit.add_argument("model")
    submit.add_argument("body", help="a JSON request file, or - for stdin")
    submit.add_argument("--idempotency-key", help="a retried submit with the same key "
                        "answers the first job")
    submit.add_argument("--callback-url", help="POST the finished job here (the server "
                        "must allow it: jobs.callbacks_allowed_prefixes)")
    submit.add_argument("--wait", action="store_true", help="wait for the job and print "
                        "its result")
    submit.add_argument("--timeout", type=float, default=3600.0,
                        help="with --wait: seconds (default 3600)")
    status = actions.add_parser("status", help="a job's status (and result once done)")
    status.add_argument("job_id")
    cancel = actions.add_parser("cancel", help="cancel a queued job (or stop a running "
                                "streamed one)")
    cancel.add_argument("job_id")
    listing = actions.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--model")
    listing.add_argument("--status", choices=("queued", "running", "succeeded", "failed",
                                              "cancelled"))
    listing.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(run=_jobs)

    plugins = commands.add_parser("plugins", help="list discovered plugins, backends and "
                                  "model types, and plugins that failed to load")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=_plugins)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document (loads no model)")
    openapi.add_argument("config", nargs="?", help="sheaf.yaml (default: embedded baseline)")
    openapi.add_argument("-o", "--output", help="file to write (default: stdout)")
    openapi.set_defaults(run=_openapi)

    build = commands.add_parser(
        "build", help="deployment files from a config: --target docker|compose|kubernetes|"
        "sagemaker|ray|kuberay -o DIR (without --target: the Ray Serve config)")
    build.add_argument("config", help="sheaf.yaml")
    build.add_argument("--target", choices=TARGETS, help="what to write into -o DIR: an "
                       "image's build context (docker), with Compose and Prometheus "
                       "(compose), Kubernetes manifests (kubernetes), the SageMaker image "
                       "(sagemaker), a Ray Serve config (ray), a KubeRay RayService (kuberay)")
    build.add_argument("-o", "--output", help="with --target: the directory to write (must "
                       "be empty or new unless --force); without: a file (default: stdout)")
    build.add_argument("--force", action="store_true", help="write into a directory that "
                       "holds other files")
    build.add_argument("--image", help=f"image reference (default: {DEFAULT_IMAGE}; "
                       "kuberay: Ray's own image)")
    build.add_argument("--name", default="sheaf", help="name of the Kubernetes objects")
    build.add_argument("--runtime", choices=("asgi", "ray"), default="asgi",
                       help="docker/compose/kubernetes: asgi (tier 1, uvicorn; default) or "
                       "ray (tier 2: a single-node Ray head and Serve in each pod)")
    build.add_argument("--replicas", type=int, default=1, help="kubernetes: pods at least")
    build.add_argument("--max-replicas", type=int, default=4, help="kubernetes: pods at most "
                       "(HorizontalPodAutoscaler)")
    build.add_argument("--hpa-metric", choices=("cpu", "queue_depth"), default="cpu",
                       help="kubernetes: scale on CPU, or on sheaf_queue_depth (needs the "
                       "Prometheus adapter)")
    build.add_argument("--bake-config", action="store_true", help="kubernetes: the config is "
                       "in the image; no ConfigMap")
    build.add_argument("--wheels", help="docker/compose/sagemaker: copy these wheels into the "
                       "build context (packages not on the index: ./dev wheels --out DIR)")
    build.add_argument("--kuberay", action="store_true", help="same as --target kuberay")
    build.add_argument("--no-pip", dest="pip", action="store_false", default=None,
                       help="ray: no runtime_env pip list (the cluster image already has "
                       "sheaf and its plugins)")
    build.add_argument("--pip", dest="pip", action="store_true", help="kuberay: install the "
                       "pinned packages through the runtime_env (with a plain Ray --image)")
    build.add_argument("--pip-index-url", help="ray/kuberay: the index the runtime_env "
                       "installs from (a private index holding the Sheaf packages)")
    build.add_argument("--find-links", help="ray/kuberay: a URL of wheels the runtime_env "
                       "install may use (pip --find-links)")
    build.add_argument("--gpu-image", help="kuberay: the image of GPU worker groups (built "
                       "with a CUDA torch); default --image")
    build.add_argument("--tls-secret", help="kubernetes (asgi): a kubernetes.io/tls Secret "
                       "mounted for server.tls; the pods serve HTTPS")
    build.add_argument("--api-keys-secret", help="kubernetes: a Secret whose 'api-keys' entry "
                       "(KEY:SCOPE|SCOPE,...) becomes $SHEAF_API_KEYS")
    build.add_argument("--redis-secret", help="kubernetes, with jobs: a Secret whose 'url' "
                       "entry becomes $SHEAF_REDIS_URL and whose 'password' KEDA reads")
    build.set_defaults(run=_build)

    validate = commands.add_parser("validate", help="check a config, its backends' kwargs "
                                   "and weights paths; reports every problem at once")
    validate.add_argument("config")
    validate.add_argument("--skip-files", dest="local_files", action="store_false",
                          help="do not check that weights paths exist on this machine (a "
                          "config for another machine or a cluster)")
    validate.set_defaults(run=_validate)
    return parser


def _log_level(command: argparse.ArgumentParser) -> None:
    command.add_argument("--log-level", default="info", type=str.lower,
                         choices=("critical", "error", "warning", "info", "debug"))


def _config_path(path: str | None, sagemaker: bool = False) -> str | None:
    """The config file to serve: the argument, $SHEAF_CONFIG (empty: unset), then with
    --sagemaker the model artefact's, then the image's baked one; None: embedded."""
    path = path or os.environ.get(CONFIG_ENV) or None
    if path is None and sagemaker:
        path = next((p for p in (SAGEMAKER_CONFIG, IMAGE_CONFIG) if Path(p).exists()), None)
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
    if args.sagemaker:
        config = _sagemaker_environment(config)
    settings = config.server
    configure_logging(args.log_level, settings.log_format)
    silence_progress_bars()  # before any backend imports its model library
    configure_tracing()  # from OTEL_* (off unless OTEL_TRACES_EXPORTER names an exporter)
    host, port = _bind(args, settings.host, settings.port)
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


def _worker(args: argparse.Namespace) -> int:
    """Run jobs until SIGTERM/SIGINT (then finish or give back what runs, exit 0)."""
    from sheaf_server.jobs.worker import run_worker

    path = _config_path(args.config)
    if path is None:
        raise ConfigError("sheaf-server worker needs a config with a jobs: section "
                          "(argument or $SHEAF_CONFIG)")
    config = load_config(path)
    configure_logging(args.log_level, config.server.log_format)
    silence_progress_bars()
    configure_tracing()
    check_config(config, local_files=True, source=path)
    return run_worker(config)


def _jobs(args: argparse.Namespace) -> int:
    """`sheaf-server jobs submit|status|cancel|list` against a server's job routes."""
    from sheaf_core.client import SheafClient, SheafHTTPError

    with SheafClient(args.url, api_key=args.api_key) as client:
        try:
            if args.action == "submit":
                text = sys.stdin.read() if args.body == "-" else Path(args.body).read_text()
                job_id = client.submit(args.model, json.loads(text),
                                       idempotency_key=args.idempotency_key,
                                       callback_url=args.callback_url)
                if not args.wait:
                    print(job_id)
                    return 0
                response = client.wait(job_id, timeout_s=args.timeout)
                print(response.model_dump_json(indent=2))
            elif args.action == "status":
                print(json.dumps(client.job(args.job_id), indent=2))
            elif args.action == "cancel":
                print(client.cancel(args.job_id))
            else:
                jobs = client.jobs(model=args.model, status=args.status, limit=args.limit)
                for job in jobs:
                    print(f"{job['job_id']}  {job['model']:<20} {job['status']:<10} "
                          f"{job['created_at']}")
        except SheafHTTPError as exc:
            print(f"sheaf-server jobs: {exc}", file=sys.stderr)
            return 1
    return 0


def _sagemaker_environment(config: SheafConfig) -> SheafConfig:
    """SageMaker's model-server variables, where they apply: SAGEMAKER_MODEL_SERVER_TIMEOUT
    (seconds) is every request's deadline (server.request_timeout_s).
    SAGEMAKER_MODEL_SERVER_WORKERS is not applied — one process serves (tier 1) — and is
    said so in the log. SAGEMAKER_BIND_TO_PORT: see `_bind`."""
    timeout = os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT")
    if os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS"):
        log.warning("SAGEMAKER_MODEL_SERVER_WORKERS=%s is not applied: one process serves "
                    "every model", os.environ["SAGEMAKER_MODEL_SERVER_WORKERS"])
    if not timeout:
        return config
    try:
        server = config.server.model_validate(
            {**config.server.model_dump(), "request_timeout_s": float(timeout)})
    except ValueError as exc:
        raise ConfigError(f"$SAGEMAKER_MODEL_SERVER_TIMEOUT: {timeout!r} is not a timeout in "
                          f"seconds (0 < t <= 3600): {exc}") from None
    return config.model_copy(update={"server": server})


def _bind(args: argparse.Namespace, host: str, port: int) -> tuple[str, int]:
    """Where to listen: the flags first; then the platform's variable — SageMaker's
    SAGEMAKER_BIND_TO_PORT (default 8080) with --sagemaker, else PORT (Cloud Run, Fly.io,
    Heroku set it), either meaning all interfaces; then the config's server.host/port."""
    platform = os.environ.get("SAGEMAKER_BIND_TO_PORT", str(SAGEMAKER_PORT)) \
        if args.sagemaker else os.environ.get("PORT")
    if platform is not None:
        try:
            port = int(platform)
        except ValueError:
            variable = "SAGEMAKER_BIND_TO_PORT" if args.sagemaker else "PORT"
            raise ConfigError(f"${variable}: {platform!r} is not a port number") from None
        host = "0.0.0.0"
    return args.host or host, args.port if args.port is not None else port


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
    pip_options = (*(("--index-url", args.pip_index_url) if args.pip_index_url else ()),
                   *(("--find-links", args.find_links) if args.find_links else ()))
    options = BuildOptions(image=args.image or DEFAULT_IMAGE, name=args.name,
                           runtime=args.runtime, replicas=args.replicas,
                           max_replicas=args.max_replicas, hpa_metric=args.hpa_metric,
                           bake_config=args.bake_config, pip=args.pip,
                           pip_options=pip_options, gpu_image=args.gpu_image,
                           wheels=Path(args.wheels) if args.wheels else None,
                           tls_secret=args.tls_secret, api_keys_secret=args.api_keys_secret,
                           redis_secret=args.redis_secret)
    if args.target is None:  # the Ray Serve config (or RayService) as one file or stdout
        check_config(config, local_files=False, source=args.config)  # paths: the cluster's
        document = (kuberay_document if args.kuberay else ray_document)(config, options)
        text = serve_config.dump(document)
        if args.output:
            Path(args.output).write_text(text)
            log.info("wrote %s", args.output)
        else:
            print(text, end="")
        return 0
    if not args.output:
        raise ConfigError(f"--target {args.target}: name the directory to write with -o DIR")
    try:
        result = build_target(args.target, config, options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    written = result.write(args.output, force=args.force)
    for path in written:
        print(f"wrote {path}")
    for step in result.next_steps:
        print(f"next: {step.replace('{dir}', args.output)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = check_config_file(args.config, local_files=args.local_files)
    pipelines = f", {len(config.pipelines)} pipelines" if config.pipelines else ""
    print(f"{args.config}: ok ({len(config.models)} models{pipelines})")
    return 0


if __name__ == "__main__":
    run()
