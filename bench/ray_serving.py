"""Serving on Ray: sheaf on Ray Serve vs Chronos-Bolt on Ray Serve written by hand vs
sheaf's plain ASGI server — the same backend, batch settings and load, printed side by side.

For each client count (1, 16, 64), back to back:

  raw Ray Serve          bench/raw_ray_serve.py on a cluster with Ray's defaults (its Python
                         HTTP proxy): what a team gets writing the deployment themselves;
  raw Ray Serve (tuned) the same code on a cluster started with the flags sheaf sets
                         (HAProxy, direct ingress): the hand-written ceiling;
  sheaf on Ray           `sheaf-server serve --runtime ray` (ingress deployment + one model
                         deployment, batching in the model replica);
  sheaf tier 1           `sheaf-server serve` (one uvicorn process).

Load comes from wrk over 127.0.0.1 (bench/serve_overhead.py's harness). Each server runs
alone: its cluster is started before and stopped after its rows.

    ./dev bench-ray                       # the committed run: writes bench/results/ray_serving.*
    ./dev bench-ray --duration 3 --clients 64 --no-save
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from serve_overhead import (
    MAX_BATCH,
    RESULTS,
    WORKLOADS,
    WRK_SCRIPT,
    Workload,
    _free_port,
    _pass_seconds,
    publish,
    wrk,
)

HERE = Path(__file__).parent
SERVERS = ("raw Ray Serve", "raw Ray Serve (tuned)", "sheaf on Ray", "sheaf tier 1")


@dataclass
class Row:
    server: str
    clients: int
    batch: float | None
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@contextmanager
def running(server: str, workload: Workload, model_dir: Path,
            workdir: Path) -> Iterator[tuple[str, str | None]]:
    """Start `server`; yield (predict URL, stats URL or None) once it answers; stop it."""
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port())}
    base = f"http://127.0.0.1:{port}"
    if server.startswith("raw"):
        command = [sys.executable, str(HERE / "raw_ray_serve.py"), str(model_dir), str(port)]
        if server.endswith("(tuned)"):
            command.append("--throughput-optimized")
        predict, stats = f"{base}/", None
    else:
        config = workdir / "sheaf.yaml"
        config.write_text(json.dumps({
            "server": {"host": "127.0.0.1", "port": port},
            "models": [{"name": workload.name, "backend": "chronos",
                        "backend_kwargs": {"model_id": str(model_dir)},
                        "batching": {"max_batch_size": MAX_BATCH, "max_wait_ms": 2}}]}))
        command = [str(Path(sys.executable).with_name("sheaf-server")), "serve", str(config),
                   "--log-level", "warning"]
        if server == "sheaf on Ray":
            command += ["--runtime", "ray"]
        predict, stats = f"{base}/{workload.name}/predict", f"{base}/models/{workload.name}"
    log = (workdir / f"{server.replace(' ', '_').replace(',', '')}.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_answering(predict, workload, proc)
        yield predict, stats
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        subprocess.run(["pkill", "-f", f"{ray_tmp}"], check=False)  # leftover HAProxy
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _wait_answering(url: str, workload: Workload, proc: subprocess.Popen[bytes],
                    timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see its log")
        try:
            response = httpx.post(url, content=workload.body(), timeout=30,
                                  headers={"content-type": "application/json"})
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _batches(stats: str | None) -> tuple[int, int]:
    if stats is None:
        return 0, 0
    counters = httpx.get(stats, timeout=10).json()["stats"]
    return counters["batches"], counters["requests"]


def measure(server: str, workload: Workload, model_dir: Path, clients: list[int],
            duration: float, workdir: Path) -> list[Row]:
    script = workdir / f"{workload.name}.lua"
    script.write_text(WRK_SCRIPT % workload.body())
    rows = []
    print(f"[{server}] starting …", file=sys.stderr, flush=True)
    with running(server, workload, model_dir, workdir) as (url, stats):
        for c in clients:
            print(f"[{server}] {c} clients …", file=sys.stderr, flush=True)
            wrk(url, script, c, 2)  # warm up at this concurrency
            before = _batches(stats)
            passes = [wrk(url, script, c, _pass_seconds(duration)) for _ in range(3)]
            after = _batches(stats)
            best = max(passes, key=lambda r: r["requests"] / r["duration_us"])
            batches, served = after[0] - before[0], after[1] - before[1]
            rows.append(Row(server, c, round(served / batches, 1) if batches else None,
                            best["requests"] / (best["duration_us"] / 1e6),
                            best["p50_us"] / 1000, best["p99_us"] / 1000,
                            sum(r["non2xx"] + r["socket_errors"] for r in passes)))
    return rows


def table(rows: list[Row]) -> str:
    raw = {r.clients: r.rps for r in rows if r.server == "raw Ray Serve"}
    lines = ["| clients | server | batch | req/s | vs raw Ray Serve | p50 ms | p99 ms | errors |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r.clients, SERVERS.index(r.server))):
        ratio = f"{r.rps / raw[r.clients]:.2f}x" if r.clients in raw else ""
        batch = "" if r.batch is None else f"{r.batch:g}"
        lines.append(f"| {r.clients} | {r.server} | {batch} | {r.rps:,.0f} | {ratio} | "
                     f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=9,
                        help="seconds per row (three passes of a third each)")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated client counts")
    parser.add_argument("--model", default="tiny", choices=sorted(WORKLOADS))
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, of: {', '.join(SERVERS)}")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    servers = [s.strip() for s in args.servers.split(",")]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown {unknown}; choose from {list(SERVERS)}")
    clients = [int(c) for c in args.clients.split(",")]
    workload = WORKLOADS[args.model]

    from sheaf_backend_chronos import testing

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-ray-") as tmp:
        workdir = Path(tmp)
        model_dir = getattr(testing, workload.build)(workdir / workload.name)
        for server in servers:
            rows += measure(server, workload, model_dir, clients, args.duration, workdir)
    publish("ray_serving", [
        f"Model **{workload.name}** ({workload.build}; cost dominated by "
        f"{workload.what_it_measures}); batches of up to {MAX_BATCH}, 2 ms wait, everywhere. "
        f"{args.duration:g} s per row, best of three passes; wrk -t1 over 127.0.0.1 on the "
        "same machine (wrk, Ray's processes and torch share its cores). `batch` = mean batch "
        "the model replica formed (sheaf's own counters; raw Ray Serve has none).", "",
        table(rows)], rows, not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
