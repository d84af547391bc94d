"""Tier 1 as several processes: the supervisor behind `ModelServer` when `server.workers`
is above 1 or a model has `replicas` above 1.

    supervisor ── starts, watches, restarts, stops ──┬─ HTTP worker x server.workers
      (this process: holds the port, the run            (uvicorn + the FastAPI app over a
       directory, a control engine for hot swap          ProcessEngine; SO_REUSEPORT on
       and /ready-style states)                          the one port)
                                                     └─ model worker x replicas, per model
                                                        (the model's Engine: one batcher
                                                         for every HTTP worker's requests)

Children are fresh interpreters (`workers.child`) with their role on stdin. A child that
exits while the server runs is started again — at once, or after a back-off (1 s doubling
to 30 s) when it keeps failing within seconds of starting. `stop()` drains in order: HTTP
workers first (no new requests; those in flight are answered), then the model workers
(their queued and running batches), each within `server.drain_timeout_s`, then kills
whatever remains; nothing outlives the supervisor (see `workers.child` for a supervisor
that is itself killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sheaf_core.errors import ConfigError
from sheaf_core.spec import ModelSpec
from sheaf_server.engine.metrics import MULTIPROC_ENV
from sheaf_server.settings import SheafConfig
from sheaf_server.workers.child import ENTRY, HttpWorkerRole, ModelWorkerRole, Role, write_role
from sheaf_server.workers.http_worker import reuseport_socket
from sheaf_server.workers.link import exit_note_path
from sheaf_server.workers.process_engine import ProcessEngine

log = logging.getLogger("sheaf.workers")

#: `workers: auto` never starts more HTTP workers than this (each holds the app, a few
#: tens of MiB, and a core's worth of work at most).
MAX_AUTO_WORKERS = 32
#: A child that exits sooner than this after starting counts as failing: back off.
HEALTHY_AFTER_S = 10.0
MAX_BACKOFF_S = 30.0
#: A model worker that exits this many times in a row, each within `HEALTHY_AFTER_S` of
#: starting, is reported `failed` (it is still retried, every `MAX_BACKOFF_S` at most).
CRASH_LOOP_FAILURES = 3
#: What a stop may take beyond `server.drain_timeout_s` before what still runs is killed,
#: and the least the model workers get to finish their last batches after the HTTP workers.
STOP_MARGIN_S = 7.0
STOP_FLOOR_S = 3.0


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, lowered by a cgroup CPU quota
    (a container's `--cpus`, a pod's CPU limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = pathlib.Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


def model_processes(config: SheafConfig) -> int:
    """How many model worker processes the config asks for (each model's `replicas`)."""
    return sum(getattr(spec, "replicas", 1) for spec in config.models)


def http_workers(config: SheafConfig) -> int:
    """How many HTTP worker processes `server.workers` asks for here. `auto`: one per core
    left after one for each model worker process, at most 32 — and 1 (tier 1 in one
    process) when that leaves fewer than 2: on 2 cores the processes' calls to each other
    cost more than the second core gives back (bench/results/multi_process.md)."""
    workers = config.server.workers
    if workers != "auto":
        return int(workers)
    spare = available_cores() - model_processes(config)
    return min(spare, MAX_AUTO_WORKERS) if spare >= 2 else 1


def uses_processes(config: SheafConfig) -> bool:
    """Whether tier 1 runs as several processes (else: one, as `workers: 1` always did)."""
    return http_workers(config) > 1 or model_processes(config) > len(config.models)


@dataclass(eq=False)
class Child:
    """One process the supervisor keeps running."""

    label: str
    role: Callable[[], Role]  # called at each start: a model worker gets the latest spec
    is_model: bool
    #: A model worker's socket path: its exit note lies beside it (`link.exit_note_path`).
    socket_path: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class ProcessHost:
    """Runs the config on HTTP worker processes and model worker processes (`ModelServer`'s
    host for tier 1 with `server.workers` > 1 or `replicas` > 1)."""

    def __init__(self, config: SheafConfig, *, host: str, port: int,
                 plugins: Iterable[object] = (), log_level: str = "info") -> None:
        self.config = config
        self.host, self.port = host, port
        self.plugins = tuple(plugins)
        self.log_level = log_level
        self.workers = http_workers(config)
        self.scheme = "https" if config.server.tls else "http"
        self.specs: dict[str, ModelSpec] = {spec.name: spec for spec in config.models}
        #: Hot swaps per model, handed to a worker restarted later (its /models entry).
        self.generations: dict[str, int] = {spec.name: 0 for spec in config.models}
        # Unix socket paths must stay under ~100 bytes: a short directory, short names.
        self.run_dir = tempfile.mkdtemp(prefix="sheaf-")
        self.sockets = {spec.name: [os.path.join(self.run_dir, f"m{i}r{r}.sock")
                                    for r in range(getattr(spec, "replicas", 1))]
                        for i, spec in enumerate(config.models)}
        # The supervisor's own view of the models: constructing it checks every backend's
        # kwargs now (a ConfigError before anything starts); it applies hot swaps and
        # reports states.
        self.engine = ProcessEngine(config.models, self.sockets, config.server,
                                    plugins=self.plugins, pipelines=config.pipelines)
        self.children: list[Child] = []
        self._reservation: Any = None
        self._env: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Set once every HTTP worker listens; until then the monitor tends model workers
        #: only (an HTTP worker that exits while starting fails the start instead).
        self._serving = threading.Event()
        self._lock = threading.Lock()

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> str:
        """Reserve the port, start the model workers (they load in the background) and the
        HTTP workers; the URL once every HTTP worker listens."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> str:
        try:
            self._reservation = reuseport_socket(self.host, self.port)
        except OSError as exc:
            raise RuntimeError(f"cannot bind {self.host}:{self.port}: {exc.strerror} (is "
                               "the port taken?)") from None
        port = self._reservation.getsockname()[1]
        self._env = self._child_environment()
        self._start_control_loop()
        for spec in self.config.models:
            for r, path in enumerate(self.sockets[spec.name]):
                self.children.append(Child(
                    f"model {spec.name!r} worker {r + 1}", self._model_role(spec.name, path),
                    is_model=True, socket_path=path))
        http = []
        for index in range(self.workers):
            ready_file = os.path.join(self.run_dir, f"http{index}.ready")
            role = HttpWorkerRole(self.config, self.host, port, self.sockets, ready_file,
                                  index, self.workers, self.plugins, self.log_level)
            http.append(Child(f"HTTP worker {index + 1}", _constant(role), is_model=False))
        self.children.extend(http)
        for child in self.children:
            self._spawn(child)
        # Tending model workers already: one that dies while loading is restarted (and
        # reported failed when it keeps dying) while the HTTP workers wait for it.
        self._monitor = threading.Thread(target=self._watch, name="sheaf-supervisor",
                                         daemon=True)
        self._monitor.start()
        deadline = time.monotonic() + timeout_s
        for child in http:
            ready_file = child.role().ready_file  # type: ignore[union-attr]
            while not os.path.exists(ready_file):
                assert child.process is not None
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.label} exited while starting (code "
                                       f"{child.process.returncode}; see the log above)")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{child.label} did not start within {timeout_s:.0f}s")
                time.sleep(0.02)
        self._serving.set()
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        log.info("serving with %d HTTP workers and %d model workers", self.workers,
                 sum(len(paths) for paths in self.sockets.values()))
        return f"{self.scheme}://{shown}:{port}"

    def _model_role(self, name: str, path: str) -> Callable[[], Role]:
        def role() -> Role:
            return ModelWorkerRole(self.specs[name], self.config.server, path, self.plugins,
                                   self.log_level, self.generations[name])
        return role

    def _child_environment(self) -> dict[str, str]:
        """The children's environment: this one, with this interpreter's import path (so
        plugins handed over by reference import there too) and one Prometheus directory
        for all of them (one scrape of any HTTP worker sums every process)."""
        env = dict(os.environ)
        paths = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if not env.get(MULTIPROC_ENV):
            metrics = os.path.join(self.run_dir, "metrics")
            os.makedirs(metrics, exist_ok=True)
            env[MULTIPROC_ENV] = metrics
        return env

    def _start_control_loop(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.engine.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.engine.stop())
            loop.close()

        self._loop_thread = threading.Thread(target=run, name="sheaf-control", daemon=True)
        self._loop_thread.start()
        ready.wait()

    def _spawn(self, child: Child) -> None:
        process = subprocess.Popen(
            [sys.executable, *ENTRY], stdin=subprocess.PIPE,
            env=self._env, start_new_session=True)  # Ctrl-C reaches the supervisor alone
        assert process.stdin is not None
        write_role(process.stdin, child.role())  # stdin stays open: the child's lifeline
        child.process, child.started_at, child.restart_at = process, time.monotonic(), None

    # -- watch ------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Restart children that exit while the server runs."""
        while not self._stopping.wait(0.1):
            with self._lock:
                if self._stopping.is_set():
                    return
                for child in self.children:
                    if child.is_model or self._serving.is_set():
                        self._tend(child)

    def _tend(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._spawn(child)
            return
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            if child.is_model and now - child.started_at > HEALTHY_AFTER_S:
                _clear_exit_note(child)
            return
        _close(child.process)
        ran = now - child.started_at
        child.failures = child.failures + 1 if ran < HEALTHY_AFTER_S else 0
        delay = 0.0 if child.failures == 0 else min(2.0 ** (child.failures - 1), MAX_BACKOFF_S)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log.error("%s (pid %d) exited with %s after %.1fs; restarting it%s", child.label,
                  child.process.pid, how, ran, f" in {delay:.0f}s" if delay else "")
        child.restart_at = now + delay
        if child.is_model:
            _write_exit_note(child, how, delay)

    # -- the host protocol -----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._monitor is not None and self._monitor.is_alive()

    def processes(self) -> dict[str, int]:
        """Each running child's pid by its label."""
        return {child.label: child.process.pid for child in self.children
                if child.process is not None and child.restart_at is None}

    def model_states(self) -> dict[str, dict[str, Any]]:
        """Each model's and pipeline's state and reason, as the model workers announce
        them (what every HTTP worker's /ready lists)."""
        return self.engine.readiness()[1]

    def update(self, spec: ModelSpec) -> None:
        """Hot-swap a model in each of its worker processes; a worker restarted later
        starts with `spec`."""
        current = self.specs.get(spec.name)
        if current is not None and getattr(spec, "replicas", 1) != getattr(current,
                                                                           "replicas", 1):
            raise ConfigError(f"model {spec.name!r}: replicas: changing the number of a "
                              "model's worker processes needs a restart")
        if self._loop is None:
            raise RuntimeError("the server is not running")
        asyncio.run_coroutine_threadsafe(self.engine.update(spec), self._loop).result()
        self.specs[spec.name] = spec
        self.generations[spec.name] += 1

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Drain and stop every process: HTTP workers, then model workers."""
        with self._lock:
            self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        # One budget for both phases, so the whole stop fits the grace period an
        # orchestrator gives it (deploy/kubernetes.py: preStop + drain + 10 s): the model
        # workers get what the HTTP workers left, at least STOP_FLOOR_S.
        deadline = time.monotonic() + self.config.server.drain_timeout_s + STOP_MARGIN_S
        _terminate([c for c in self.children if not c.is_model],
                   deadline - time.monotonic())
        _terminate([c for c in self.children if c.is_model],
                   max(STOP_FLOOR_S, deadline - time.monotonic()))
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10)
        if self._reservation is not None:
            self._reservation.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _write_exit_note(child: Child, how: str, delay: float) -> None:
    """Why a model worker is down, for every HTTP worker's /ready (they read it while they
    cannot reach the worker): restarting — or failed, when it keeps dying at start (a
    crash or an OOM kill while loading), so that /ready and `exit_on_load_failure` say so
    instead of "loading" for ever."""
    assert child.socket_path is not None
    failed = child.failures >= CRASH_LOOP_FAILURES
    if failed:
        reason = (f"its worker process keeps exiting within {HEALTHY_AFTER_S:.0f}s of starting "
                  f"({how}, {child.failures} times in a row; the server log has why); "
                  f"retrying in {delay:.0f}s")
    else:
        reason = f"its worker process exited ({how}); the server is restarting it"
    note = pathlib.Path(exit_note_path(child.socket_path))
    note.with_suffix(".tmp").write_text(json.dumps({"failed": failed, "reason": reason}))
    note.with_suffix(".tmp").replace(note)  # readers never see half a note


def _clear_exit_note(child: Child) -> None:
    assert child.socket_path is not None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_note_path(child.socket_path))


def _constant(role: Role) -> Callable[[], Role]:
    return lambda: role


def _terminate(children: list[Child], grace_s: float) -> None:
    """SIGTERM each, wait up to `grace_s` for all, SIGKILL the rest."""
    running = [c.process for c in children if c.process is not None and c.restart_at is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0fs; killing it", process.pid, grace_s)
            process.kill()
            process.wait()
        _close(process)


def _close(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
