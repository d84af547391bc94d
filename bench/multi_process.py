"""Every core at work: sheaf tier 1 on one process (`workers: 1`) and on several
(`workers: auto`), beside the in-process limit and two peers, in one run.

Rows per model and client count:

  limit             the backend's `predict` in-process on a batch of min(clients, 32)
  sheaf workers=1   `sheaf-server serve`, one process (HTTP, batcher and model together)
  sheaf workers=N   N HTTP worker processes (`--workers`: the machine's cores by default,
                    or `auto`) and one model worker process (`--replicas`: also rows
                    with the model in several)
  FastAPI batched   one uvicorn process batching by hand (bench/peers/fastapi_batched.py)
  LitServe          LitServe 0.2 with N API servers and one inference worker, its batching
                    at the same 32 / 2 ms (bench/peers/litserve_app.py)

Every server loads the same saved model files through chronos' `from_pretrained` and
answers the same body. The peers run from a separate virtual environment (bench/.peers:
litserve and its pins; torch and chronos reached from the project's environment), made by
`./dev bench-workers`. `cores` = CPU seconds of the server's whole process tree per second
of the pass (what it used of the machine).

    ./dev bench-workers                      # the committed run: writes bench/results/
    ./dev bench-workers --duration 3 --clients 64 --models tiny --no-save
    # many cores: servers on 12 CPUs, wrk on 4; workers: auto, and 2 and 4 model processes
    taskset -c 0-11 python bench/multi_process.py --no-peers --workers auto \
        --replicas 2,4 --wrk-threads 4 --wrk-cpus 12-15  # results/multi_process_16_cores.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from serve_overhead import (
    MAX_BATCH,
    WORKLOADS,
    WRK_SCRIPT,
    InProcess,
    Workload,
    _free_port,
    _pass_seconds,
    _served,
    publish,
    serve_config,
    wrk,
)

HERE = Path(__file__).parent
PEERS_PYTHON = HERE / ".peers" / "bin" / "python"


@dataclass
class Row:
    model: str
    clients: int
    server: str
    batch: float | None
    rps: float
    p50_ms: float
    p99_ms: float
    cores: float | None
    errors: int = 0
    requests: int = 0


@dataclass
class Server:
    """A server under test: where to post, the root of its process tree, and whether it
    reports the batches it formed (sheaf's /models/{name})."""

    name: str
    url: str
    pid: int
    sheaf_model: str | None = None
    #: wrk's threads and the CPUs it is pinned to (`--wrk-threads`, `--wrk-cpus`).
    wrk_threads: int = 1
    wrk_cpus: str | None = None

    def cpu_seconds(self) -> float:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def row(self, workload: Workload, script: Path, clients: int, duration: float) -> Row:
        wrk(self.url, script, clients, 2, self.wrk_threads, self.wrk_cpus)  # warm up
        before = _served(self.url.rsplit("/", 2)[0], self.sheaf_model) \
            if self.sheaf_model else None
        passes, cores = [], []
        for _ in range(3):
            cpu = self.cpu_seconds()
            result = wrk(self.url, script, clients, _pass_seconds(duration),
                         self.wrk_threads, self.wrk_cpus)
            cores.append((self.cpu_seconds() - cpu) / (result["duration_us"] / 1e6))
            passes.append(result)
        best = max(range(3), key=lambda i: passes[i]["requests"] / passes[i]["duration_us"])
        result = passes[best]
        batch = None
        if before is not None and self.sheaf_model:
            batches, served = _served(self.url.rsplit("/", 2)[0], self.sheaf_model)
            batches, served = batches - before[0], served - before[1]
            batch = round(served / batches, 1) if batches else None
        return Row(workload.name, clients, self.name, batch,
                   result["requests"] / (result["duration_us"] / 1e6),
                   result["p50_us"] / 1000, result["p99_us"] / 1000, round(cores[best], 2),
                   errors=sum(r["non2xx"] + r["socket_errors"] for r in passes),
                   requests=sum(r["requests"] for r in passes))


@contextmanager
def sheaf(workload: Workload, model_dir: Path, workers: int | str, workdir: Path,
          replicas: int = 1) -> Iterator[Server]:
    """`sheaf-server serve` with `server.workers` as given (a number, or `auto`) and the
    model in `replicas` worker processes."""
    port = _free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": workers},
        "models": [{"name": workload.name, "backend": "chronos", "replicas": replicas,
                    "backend_kwargs": {"model_id": str(model_dir)},
                    "batching": {"max_batch_size": MAX_BATCH, "max_wait_ms": 2}}],
    }
    label = workers if workers != "auto" else f"auto ({_auto_workers(config)})"
    if replicas > 1:
        label = f"{label}, replicas={replicas}"
    with serve_config(config, workdir / f"{workload.name}-w{workers}.yaml") as (base, pid):
        url = f"{base}/{workload.name}/predict"
        httpx.post(url, content=workload.body(), timeout=60,
                   headers={"content-type": "application/json"}).raise_for_status()
        yield Server(f"sheaf workers={label}", url, pid, workload.name)


def _auto_workers(config: dict[str, Any]) -> int:
    """What `workers: auto` resolves to on this machine for `config`."""
    from sheaf_server.settings import SheafConfig
    from sheaf_server.workers.supervisor import http_workers

    return http_workers(SheafConfig.model_validate(config))


@contextmanager
def peer(name: str, script: str, args: list[str], workdir: Path) -> Iterator[Server]:
    port = _free_port()
    log = (workdir / f"{script}.log").open("w")
    process = subprocess.Popen([str(PEERS_PYTHON), str(HERE / "peers" / script), *args[:1],
                                str(port), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                               cwd=HERE / "peers", start_new_session=True)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        _wait_answering(url, process, workdir / f"{script}.log")
        yield Server(name, url, process.pid)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        log.close()


def _wait_answering(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    import time

    body = {"history": [1.0, 2.0, 3.0], "horizon": 4}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: exited with {process.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            if httpx.post(url, json=body, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within 180 s")


def _cores() -> int:
    from sheaf_server.workers.supervisor import available_cores

    return available_cores()


def measure(workload: Workload, model_dir: Path, clients: list[int], duration: float,
            workdir: Path, peers: bool, workers: int | str, wrk_threads: int = 1,
            wrk_cpus: str | None = None, replicas: tuple[int, ...] = ()) -> list[Row]:
    """Per client count, every server back to back (one at a time: each has the machine),
    so that a noisy neighbour skews them alike."""
    script = workdir / f"{workload.name}.lua"
    script.write_text(WRK_SCRIPT % workload.body())
    limit = InProcess(workload, model_dir)
    rows: list[Row] = []
    servers = [lambda: sheaf(workload, model_dir, 1, workdir),
               lambda: sheaf(workload, model_dir, workers, workdir)]
    servers += [lambda n=n: sheaf(workload, model_dir, workers, workdir, n)  # type: ignore
                for n in replicas]
    if peers:
        servers += [
            lambda: peer("FastAPI batched", "fastapi_batched.py", [str(model_dir)], workdir),
            lambda: peer(f"LitServe ({_cores()} API servers)", "litserve_app.py",
                         [str(model_dir), str(_cores())], workdir)]
    for c in clients:
        print(f"[{workload.name}] {c} clients: limit", file=sys.stderr, flush=True)
        limit_row = limit.row(c, duration)
        rows.append(Row(workload.name, c, "limit", limit_row.batch, limit_row.rps,
                        limit_row.p50_ms, limit_row.p99_ms, 1.0, 0, limit_row.requests))
    limit.backend.close()
    for start in servers:
        with start() as server:
            server.wrk_threads, server.wrk_cpus = wrk_threads, wrk_cpus
            for c in clients:
                print(f"[{workload.name}] {c} clients: {server.name}", file=sys.stderr,
                      flush=True)
                rows.append(server.row(workload, script, c, duration))
    return rows


def table(rows: list[Row]) -> str:
    limits = {(r.model, r.clients): r.rps for r in rows if r.server == "limit"}
    single = {(r.model, r.clients): r.rps for r in rows if r.server == "sheaf workers=1"}
    lines = ["| model | clients | server | batch | req/s | % of limit | x workers=1 | p50 ms "
             "| p99 ms | cores | errors |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(rows, key=lambda r: (list(WORKLOADS).index(r.model), r.clients))
    for r in order:
        share = 100 * r.rps / limits[(r.model, r.clients)]
        ratio = r.rps / single[(r.model, r.clients)] if (r.model, r.clients) in single else 0
        batch = "" if r.batch is None else f"{r.batch:g}"
        cores = "" if r.cores is None else f"{r.cores:.2f}"
        lines.append(f"| {r.model} | {r.clients} | {r.server} | {batch} | {r.rps:,.0f} | "
                     f"{share:.0f}% | {ratio:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                     f"{cores} | {r.errors} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=9,
                        help="seconds per row (three passes of a third each)")
    parser.add_argument("--clients", default="1,64", help="comma-separated client counts")
    parser.add_argument("--models", default="tiny,compute", help=f"of {', '.join(WORKLOADS)}")
    parser.add_argument("--no-peers", action="store_true", help="sheaf and the limit only")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    parser.add_argument("--workers", default="cores", help="the multi-process row's "
                        "server.workers: a number, auto, or cores (the machine's cores; "
                        "on 2 cores auto is 1)")
    parser.add_argument("--replicas", default="", help="comma-separated: also serve the "
                        "multi-process row with the model in this many worker processes")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--wrk-cpus", default=None, help="pin wrk to these CPUs (taskset "
                        "list, e.g. 12-15; run the bench itself under taskset for the rest)")
    args = parser.parse_args(argv)
    workers: int | str = _cores() if args.workers == "cores" else \
        args.workers if args.workers == "auto" else int(args.workers)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    if not args.no_peers and not PEERS_PYTHON.exists():
        parser.error(f"no {PEERS_PYTHON}: run ./dev bench-workers (it makes the peers' venv)")
    clients = [int(c) for c in args.clients.split(",")]
    workloads = [WORKLOADS[m] for m in args.models.split(",")]

    from sheaf_backend_chronos import testing

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-") as tmp:
        workdir = Path(tmp)
        for w in workloads:
            model_dir = getattr(testing, w.build)(workdir / w.name)
            rows += measure(w, model_dir, clients, args.duration, workdir, not args.no_peers,
                            workers, args.wrk_threads, args.wrk_cpus,
                            tuple(int(n) for n in args.replicas.split(",") if n))
    body = [
        f"{args.duration:g} s per row, the best of three passes; wrk -t{args.wrk_threads} "
        f"over 127.0.0.1 on the same machine ("
        + (f"wrk pinned to CPUs {args.wrk_cpus}, the servers to the other {_cores()}"
           if args.wrk_cpus else f"{_cores()} cores: wrk, the server and torch share them")
        + "); "
        "torch_threads=1 everywhere; batches of up to 32 formed within 2 ms everywhere.",
        "",
        *[f"- **{w.name}** ({w.build}): history {w.history_length}, horizon {w.horizon}, "
          f"quantiles [0.1, 0.5, 0.9], {len(w.body()):,} byte body." for w in workloads],
        "",
        "`limit` = backend.predict in-process on a batch of min(clients, 32); `batch` = the "
        "mean batch sheaf formed (its /models counters); `x workers=1` = req/s over sheaf "
        "workers=1 at the same clients; `cores` = CPU seconds of the server's process tree "
        "per second (the limit: 1 by construction).",
        "",
        table(rows),
    ]
    publish("multi_process", body, rows, not args.no_save)
    print(json.dumps({"rows": len(rows)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
