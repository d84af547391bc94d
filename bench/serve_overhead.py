"""What does serving through sheaf cost, next to calling the backend in-process?

Prints, in one run and side by side, for each model and each client count:

  (a) limit     the backend's `predict` called in-process on a batch of min(clients, 32)
                requests — what the hardware gives with no HTTP, JSON or queueing;
  (b) sheaf     `sheaf-server serve` with batching off (one request per backend call);
  (c) sheaf     `sheaf-server serve` with batching on (max_batch_size 32).

Load for (b) and (c) comes from `wrk` (Debian's package) in a separate process over
127.0.0.1, each client a keep-alive connection posting one time_series request.

Two Chronos-Bolt models with random weights, built here and loaded through the same
`from_pretrained` path as a hub checkpoint:
  tiny     ~35k parameters: its cost is HTTP and JSON, so it shows the engine's own ceiling;
  compute  chronos-bolt-tiny's architecture (~8.6M parameters): its cost is the forward pass.

    ./dev bench                        # the committed run: writes bench/results/
    ./dev bench --duration 3 --clients 1,16 --models tiny --no-save    # a quick look
    ./dev bench --profile              # also samples the tiny server with py-spy at 64 clients
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results"
MAX_BATCH = 32


@dataclass(frozen=True)
class Workload:
    """A model and the request every client sends to it."""

    name: str
    build: str  # the sheaf_backend_chronos.testing function that saves it
    history_length: int
    horizon: int
    what_it_measures: str

    def body(self) -> str:
        history = [round(10 + math.sin(i / 7) + 0.01 * i, 4) for i in range(self.history_length)]
        return json.dumps({"history": history, "horizon": self.horizon,
                           "output_mode": "quantiles", "quantile_levels": [0.1, 0.5, 0.9]})


WORKLOADS = {
    "tiny": Workload("tiny", "save_tiny_bolt", 128, 16, "HTTP + JSON + engine"),
    "compute": Workload("compute", "save_bolt_tiny_shape", 512, 64, "the forward pass"),
}


@dataclass
class Row:
    model: str
    clients: int
    mode: str  # "limit", "batching off", "batching on"
    batch: int | None  # in-process batch size, or the mean batch the server formed
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    requests: int = 0


# -- (a) the in-process limit ----------------------------------------------------------------


class InProcess:
    """The backend loaded in this process: `row()` times `predict` on one batch size."""

    def __init__(self, workload: Workload, model_dir: Path) -> None:
        from sheaf_backend_chronos.backend import ChronosBackend
        from sheaf_core.contracts.time_series import TimeSeriesRequest

        self.workload = workload
        self.backend = ChronosBackend(model_id=str(model_dir))
        self.backend.load()
        self.request = TimeSeriesRequest.model_validate_json(workload.body())

    def row(self, clients: int, duration: float) -> Row:
        batch = [self.request] * min(clients, MAX_BATCH)
        self.backend.predict(batch)  # warm up
        # best of three passes: the limit is what the hardware gives when nothing interferes
        passes = [_time_calls(lambda: self.backend.predict(batch), _pass_seconds(duration))
                  for _ in range(3)]
        times = min(passes, key=statistics.mean)
        return Row(self.workload.name, clients, "limit", len(batch),
                   len(batch) / statistics.mean(times), _ms(statistics.median(times)),
                   _ms(_percentile(times, 99)), requests=len(times) * len(batch))


def _pass_seconds(duration: float) -> int:
    """A third of a row's duration in whole seconds (wrk takes whole seconds)."""
    return max(1, round(duration / 3))


def _time_calls(call: Callable[[], object], duration: float) -> list[float]:
    times: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


# -- (b), (c) sheaf over HTTP, loaded by wrk -------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "SHEAF_WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"non2xx\\": %%d, " ..
    "\\"socket_errors\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, script: Path, clients: int, duration: int, threads: int = 1,
        cpus: str | None = None) -> dict[str, Any]:
    """One wrk pass; `threads` wrk threads, pinned to `cpus` (taskset's list) if given."""
    pin = ["taskset", "-c", cpus] if cpus else []
    out = subprocess.run(
        [*pin, "wrk", f"-t{min(threads, clients)}", f"-c{clients}", f"-d{duration}s",
         "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=duration + 60)
    match = re.search(r"^SHEAF_WRK (.*)$", out.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    return json.loads(match.group(1))


@contextmanager
def sheaf_server(workload: Workload, model_dir: Path, batching: bool,
                 workdir: Path) -> Iterator[tuple[str, int]]:
    """Run `sheaf-server serve` on a free loopback port; yield (base url, pid)."""
    port = _free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "models": [{
            "name": workload.name, "backend": "chronos",
            "backend_kwargs": {"model_id": str(model_dir)},
            "batching": {"enabled": batching, "max_batch_size": MAX_BATCH, "max_wait_ms": 2},
        }],
    }
    path = workdir / f"{workload.name}-{'on' if batching else 'off'}.yaml"
    with serve_config(config, path) as (base, pid):
        httpx.post(f"{base}/{workload.name}/predict", content=workload.body(), timeout=60,
                   headers={"content-type": "application/json"}).raise_for_status()
        yield base, pid


@contextmanager
def serve_config(config: dict[str, Any], path: Path) -> Iterator[tuple[str, int]]:
    """`sheaf-server serve` on `config` (written to `path`, its log next to it), until
    ready; yield (base url, pid); stop it after."""
    path.write_text(json.dumps(config))  # JSON is YAML
    exe = Path(sys.executable).with_name("sheaf-server")
    if not exe.exists():  # installed elsewhere (pip --target): the one on PATH
        exe = Path(shutil.which("sheaf-server") or exe)
    log = path.with_suffix(".log").open("w")
    proc = subprocess.Popen([str(exe), "serve", str(path), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{config['server']['host']}:{config['server']['port']}"
    try:
        _wait_ready(base, proc)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass
class Served:
    """A running sheaf server for one workload, and the wrk script that loads it."""

    workload: Workload
    base: str
    pid: int
    batching: bool
    script: Path

    @property
    def mode(self) -> str:
        return "batching on" if self.batching else "batching off"

    def row(self, clients: int, duration: float, profile_to: Path | None = None) -> Row:
        url = f"{self.base}/{self.workload.name}/predict"
        wrk(url, self.script, clients, 2)  # warm up at this concurrency
        batches_before, served_before = _served(self.base, self.workload.name)
        # best of three passes, as for the limit, so that both sides meet noise alike
        passes = []
        for i in range(3):
            profiling = profile_to is not None and i == 0
            profiler = _py_spy(self.pid, _pass_seconds(duration), profile_to) \
                if profiling else None
            passes.append(wrk(url, self.script, clients, _pass_seconds(duration)))
            if profiler is not None:
                profiler.wait(timeout=duration + 60)
        result = max(passes, key=lambda r: r["requests"] / r["duration_us"])
        batches, served = _served(self.base, self.workload.name)
        batches, served = batches - batches_before, served - served_before
        seconds = result["duration_us"] / 1e6
        return Row(self.workload.name, clients, self.mode,
                   round(served / batches, 1) if batches else None,
                   result["requests"] / seconds, result["p50_us"] / 1000,
                   result["p99_us"] / 1000,
                   errors=sum(r["non2xx"] + r["socket_errors"] for r in passes),
                   requests=sum(r["requests"] for r in passes))


def measure(workload: Workload, model_dir: Path, clients: list[int], duration: float,
            workdir: Path, profile_to: Path | None) -> list[Row]:
    """Per client count: the limit, then batching off, then on — back to back, so that a
    noisy neighbour on a shared machine skews all three alike rather than one of them."""
    script = workdir / f"{workload.name}.lua"
    script.write_text(WRK_SCRIPT % workload.body())
    limit = InProcess(workload, model_dir)
    rows = []
    with sheaf_server(workload, model_dir, False, workdir) as off, \
            sheaf_server(workload, model_dir, True, workdir) as on:
        servers = [Served(workload, *off, False, script), Served(workload, *on, True, script)]
        for c in clients:
            print(f"[{workload.name}] {c} clients …", file=sys.stderr, flush=True)
            rows.append(limit.row(c, duration))
            for server in servers:
                profile = profile_to if server.batching and c == max(clients) else None
                rows.append(server.row(c, duration, profile))
    limit.backend.close()
    return rows


def _served(base: str, model: str) -> tuple[int, int]:
    """(batches, requests) run so far, from the server's own counters (GET /models/{name})."""
    stats = httpx.get(f"{base}/models/{model}", timeout=10).json()["stats"]
    return stats["batches"], stats["requests"]


def _py_spy(pid: int, duration: float, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration",
                             str(max(1, int(duration))),
                             "--rate", "250", "--format", "raw", "--threads", "--output",
                             str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- helpers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sheaf-server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"sheaf-server at {base} was not ready within {timeout:.0f}s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return seconds * 1000


def table(rows: list[Row]) -> str:
    limits = {(r.model, r.clients): r.rps for r in rows if r.mode == "limit"}
    lines = ["| model | clients | mode | batch | req/s | % of limit | p50 ms | p99 ms | errors |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = 100 * r.rps / limits[(r.model, r.clients)] if (r.model, r.clients) in limits \
            else float("nan")
        batch = "" if r.batch is None else f"{r.batch:g}"
        lines.append(f"| {r.model} | {r.clients} | {r.mode} | {batch} | {r.rps:,.0f} | "
                     f"{share:.0f}% | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |")
    return "\n".join(lines)


def publish(name: str, body: list[str], rows: list[Any], save: bool) -> None:
    """Print the report of bench/NAME.py — its title, the command and machine, then `body`
    — and save it with the rows unless told not to."""
    report = "\n".join([f"# {name}", "",
                        f"`{' '.join([f'bench/{name}.py', *sys.argv[1:]])}` on {machine()}.",
                        *body])
    print(report)
    if save:
        save_results(name, report, rows)


def save_results(name: str, report: str, rows: list[Any]) -> None:
    """`bench/results/NAME.md` (the report) and `NAME.json` (the rows, dataclasses)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(report + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps([asdict(r) for r in rows], indent=1)
                                          + "\n")
    print(f"\nwritten to {RESULTS}/{name}.md and .json", file=sys.stderr)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout \
        if shutil.which("wrk") else "no wrk"
    return (f"{names[0] if names else cpu}, {os.cpu_count()} cores; Python "
            f"{platform.python_version()}; torch {torch.__version__}; "
            f"{' '.join(wrk_version.split()[:2])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=12,
                        help="seconds per row (three passes of a third each)")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated client counts")
    parser.add_argument("--models", default="tiny,compute", help=f"of {', '.join(WORKLOADS)}")
    parser.add_argument("--profile", action="store_true",
                        help="sample the tiny model's server with py-spy at the most clients")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    clients = [int(c) for c in args.clients.split(",")]
    unknown = set(args.models.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {sorted(WORKLOADS)}")
    workloads = [WORKLOADS[m] for m in args.models.split(",")]

    from sheaf_backend_chronos import testing

    rows: list[Row] = []
    profile = None
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-") as tmp:
        workdir = Path(tmp)
        for w in workloads:
            model_dir = getattr(testing, w.build)(workdir / w.name)
            profile_to = workdir / "profile.txt" if args.profile and w.name == "tiny" else None
            rows += measure(w, model_dir, clients, args.duration, workdir, profile_to)
            if profile_to is not None and profile_to.exists():
                profile = summarize_profile(profile_to.read_text())
    publish("serve_overhead", render(rows, workloads, args, profile), rows, not args.no_save)
    return 0


def render(rows: list[Row], workloads: list[Workload], args: argparse.Namespace,
           profile: str | None) -> list[str]:
    parts = [
        f"{args.duration:g} s per row, as the best of three passes (limit and servers "
        "alike, so that noise from other tenants of the machine hits both sides the same); "
        "wrk -t1 over 127.0.0.1 on the same machine (wrk, the server and torch share its "
        "cores); torch_threads=1 everywhere.",
        "",
    ]
    for w in workloads:
        parts.append(f"- **{w.name}** ({w.build}): history {w.history_length}, horizon "
                     f"{w.horizon}, quantiles [0.1, 0.5, 0.9], {len(w.body()):,} byte body; "
                     f"cost dominated by {w.what_it_measures}.")
    parts += ["", "`limit` = backend.predict in-process on a batch of min(clients, 32); `batch` "
              "for sheaf rows = mean batch the server formed over the three passes (its "
              "/models/{name} counters); `errors` = non-2xx and socket errors over all passes.",
              "",
              table(rows)]
    if profile:
        parts += ["", "## Where the tiny model's server spends its time (py-spy, 64 clients, "
                  "batching on)", "", profile]
    return parts


# -- profile summary -----------------------------------------------------------------------

#: Request-path stages, matched against py-spy frames ("function (path:line)"). Each sample
#: goes to the stage of its innermost matching frame, so a stage's share is the time spent in
#: it and not in a more specific stage below it.
STAGES: list[tuple[str, Callable[[str], bool]]] = [
    ("backend.predict (worker thread)", lambda f: f.startswith("_call_backend (")),
    ("request parse + validate (pydantic)", lambda f: f.startswith("ModelRuntime.parse (")),
    ("model checks (backend.validate_request)", lambda f: f.startswith("ModelRuntime.check (")),
    ("response encode (pydantic)", lambda f: f.startswith("ModelRuntime.encode (")),
    ("batcher: submit, dispatch, futures", lambda f: f.startswith("DynamicBatcher.")),
    ("disconnect watcher", lambda f: f.startswith("_until_disconnect")),
    ("request id middleware", lambda f: f.startswith("RequestIdMiddleware")),
    ("sheaf handler + fast path", lambda f: f.startswith(("_predict (", "FastPathMiddleware"))),
    ("worker thread between batches (queue, GIL)",
     lambda f: f.startswith(("_worker (concurrent/futures/thread.py", "_WorkItem.run ("))),
    ("uvicorn HTTP protocol (httptools)", lambda f: "uvicorn/protocols" in f),
    ("Starlette/FastAPI layers", lambda f: "(starlette/" in f or "(fastapi/" in f),
    ("uvloop in C: socket I/O, callbacks, GIL waits",
     lambda f: f.startswith("Runner.run (asyncio/runners.py")),
]


def summarize_profile(raw: str) -> str:
    """py-spy's collapsed stacks as shares per thread and per request-path stage."""
    threads: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[_thread_name(frames[0])] += n
        stage = next((name for frame in reversed(frames[1:]) for name, match in STAGES
                      if match(frame)), "other")
        stages[stage] += n
    if not total:
        return "(py-spy took no samples)"
    lines = [f"{total:,} samples of non-idle threads (py-spy, 250 Hz).", "",
             "| thread | share |", "|---|---:|"]
    lines += [f"| {t} | {100 * n / total:.0f}% |" for t, n in threads.most_common()]
    lines += ["", "| stage (innermost matching frame) | share |", "|---|---:|"]
    lines += [f"| {s} | {100 * n / total:.1f}% |" for s, n in stages.most_common()]
    return "\n".join(lines)


def _thread_name(frame: str) -> str:
    """"thread (1234): sheaf-tiny_0" → "sheaf-tiny"."""
    name = frame.split(":", 1)[-1].strip()
    return re.sub(r"_\d+$", "", name) or frame


if __name__ == "__main__":
    raise SystemExit(main())
