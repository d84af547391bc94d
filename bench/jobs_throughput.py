"""Asynchronous jobs against /predict on the same server: what the queue costs.

A real Redis (Debian's redis-server on loopback, append-only file with `appendfsync
everysec`, as docs/jobs.md recommends), `sheaf-server serve` and 1 or 2 `sheaf-server
worker` processes on the tiny Chronos-Bolt (bench/serve_overhead.py's workload). For 1, 16
and 64 concurrent submitters, each loops for `--duration` seconds: submit a job, poll its
status every `--poll-ms` until it succeeded. Beside it, the same clients call /predict on
the same server back to back. Printed per row:

  rate        jobs (or predictions) finished per second
  e2e p50/p99 submit → result as the client saw it (polling adds up to --poll-ms)
  queue p50   the job's own timestamps: created → finished (no polling in it)

A Python client in the loop costs CPU on this 2-core machine too, so the queue's own cost
is measured a second way, with no Python client: wrk fills the queue (`POST /tiny/jobs`, 64
connections, no worker running) beside wrk on /predict; then 1 (or 2) workers drain it, and
their CPU time per job — minus what the model itself costs per request in-process at batch
32 — and Redis's CPU time per job are the queue's overhead.

    ./dev bench-jobs                       # writes bench/results/jobs_throughput.*
    ./dev bench-jobs --duration 4 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import redis
from serve_overhead import (
    MAX_BATCH,
    WORKLOADS,
    WRK_SCRIPT,
    InProcess,
    _free_port,
    _percentile,
    publish,
    serve_config,
    wrk,
)

SHEAF = Path(sys.executable).with_name("sheaf-server")


@dataclass
class Row:
    mode: str  # "predict", "jobs (1 worker)", "jobs (2 workers)"
    clients: int
    rate: float
    p50_ms: float
    p99_ms: float
    queue_p50_ms: float | None
    finished: int
    errors: int


@dataclass
class Drain:
    workers: int
    submitted: int
    submit_rate: float  # wrk, 64 connections, POST /tiny/jobs
    predict_rate: float  # wrk, 64 connections, POST /tiny/predict, same server
    drain_rate: float  # jobs finished per second by the workers
    worker_cpu_ms: float  # per job, all workers
    redis_cpu_ms: float  # per job
    model_ms: float  # the model's own cost per request, in-process at batch 32

    @property
    def overhead_ms(self) -> float:
        return self.worker_cpu_ms - self.model_ms + self.redis_cpu_ms


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(workdir), "--appendonly", "yes",
                             "--appendfsync", "everysec", "--save", "",
                             "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def workers(config: Path, count: int, workdir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for n in range(count):
        log = (workdir / f"worker-{n}.log").open("w")
        procs.append((subprocess.Popen([str(SHEAF), "worker", str(config)], stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        deadline = time.monotonic() + 120
        for n, (proc, _) in enumerate(procs):  # each has loaded its model and reads jobs
            while "running jobs of" not in (workdir / f"worker-{n}.log").read_text():
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"a worker did not start: see {workdir}/worker-{n}.log"
                time.sleep(0.05)
        yield [proc for proc, _ in procs]
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


#: One request of a closed-loop client: the seconds it took and, for a job, its
#: created→finished seconds; None when it failed.
Once = Callable[[httpx.AsyncClient], Awaitable[tuple[float, float | None] | None]]
HEADERS = {"content-type": "application/json"}


async def closed_loop(base: str, clients: int, duration: float,
                      once: Once) -> tuple[list[float], list[float], int]:
    """`clients` concurrent clients, each calling `once` back to back for `duration`:
    (latencies, queue times, errors)."""
    latencies: list[float] = []
    queue: list[float] = []
    errors = 0
    stop = time.monotonic() + duration

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            outcome = await once(client)
            if outcome is None:
                errors += 1
                await asyncio.sleep(0.05)
                continue
            latencies.append(outcome[0])
            if outcome[1] is not None:
                queue.append(outcome[1])

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return latencies, queue, errors


def predict_once(model: str, body: str) -> Once:
    async def once(client: httpx.AsyncClient) -> tuple[float, float | None] | None:
        start = time.perf_counter()
        reply = await client.post(f"/{model}/predict", content=body, headers=HEADERS)
        return (time.perf_counter() - start, None) if reply.status_code == 200 else None

    return once


def job_once(model: str, body: str, poll_s: float) -> Once:
    """Submit, then poll the status every `poll_s` until the job finished."""
    async def once(client: httpx.AsyncClient) -> tuple[float, float | None] | None:
        start = time.perf_counter()
        reply = await client.post(f"/{model}/jobs", content=body, headers=HEADERS)
        if reply.status_code != 202:
            return None
        url = reply.json()["status_url"]
        while True:
            await asyncio.sleep(poll_s)
            job = (await client.get(url)).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
        if job["status"] != "succeeded":
            return None
        return (time.perf_counter() - start,
                _timestamp(job["finished_at"]) - _timestamp(job["created_at"]))

    return once


def drain(base: str, url: str, path: Path, workdir: Path, count: int, duration: int,
          model_ms: float) -> Drain:
    """Fill the queue with wrk (no worker), then let `count` workers drain it."""
    model = WORKLOADS["tiny"].name
    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT % WORKLOADS["tiny"].body())
    client = redis.Redis.from_url(url)
    client.delete("{sheaf}:jobs:recent")  # the index lists only the jobs filled below
    predicted = wrk(f"{base}/{model}/predict", script, 64, duration)
    filled = wrk(f"{base}/{model}/jobs", script, 64, duration)
    stream = f"{{sheaf}}:jobs:stream:{model}"
    submitted = int(client.xlen(stream))
    redis_proc = next(p for p in psutil.process_iter(["name"])
                      if p.info["name"] == "redis-server"
                      and any(c.laddr.port == int(url.rsplit(":", 1)[1].split("/")[0])
                              for c in p.net_connections("tcp")))
    with workers(path, count, workdir) as procs:
        # the workers load the model first; count CPU from when they read jobs
        deadline = time.monotonic() + 120
        while client.xlen(stream) >= submitted and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu_before = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)
        redis_before = sum(redis_proc.cpu_times()[:2])
        while client.xlen(stream) > 0:
            time.sleep(0.02)
        cpu = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs) - cpu_before
    redis_cpu = sum(redis_proc.cpu_times()[:2]) - redis_before
    jobs = [client.hmget(f"{{sheaf}}:job:{job_id.decode()}", "started_at", "finished_at")
            for job_id in client.zrange("{sheaf}:jobs:recent", 0, -1)]
    started = min(float(s) for s, _ in jobs if s)
    finished = max(float(f) for _, f in jobs if f)
    done = sum(1 for _, f in jobs if f)
    return Drain(count, submitted, filled["requests"] / (filled["duration_us"] / 1e6),
                 predicted["requests"] / (predicted["duration_us"] / 1e6),
                 done / (finished - started), cpu * 1000 / done, redis_cpu * 1000 / done,
                 model_ms)


def drain_table(drains: list[Drain]) -> str:
    lines = ["| workers | jobs queued | submit/s (wrk 64) | predict/s (wrk 64) | drained/s | "
             "worker CPU ms/job | model ms/req (in-process, batch 32) | Redis CPU ms/job | "
             "queue overhead ms/job |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in drains:
        lines.append(f"| {d.workers} | {d.submitted:,} | {d.submit_rate:,.0f} | "
                     f"{d.predict_rate:,.0f} | {d.drain_rate:,.0f} | {d.worker_cpu_ms:.2f} | "
                     f"{d.model_ms:.2f} | {d.redis_cpu_ms:.2f} | {d.overhead_ms:.2f} |")
    return "\n".join(lines)


def row(mode: str, clients: int, duration: float, latencies: list[float],
        queue: list[float] | None, errors: int) -> Row:
    ms = [x * 1000 for x in latencies] or [0.0]
    return Row(mode, clients, len(latencies) / duration, _percentile(ms, 50),
               _percentile(ms, 99),
               _percentile([q * 1000 for q in queue], 50) if queue else None,
               len(latencies), errors)


def table(rows: list[Row]) -> str:
    lines = ["| mode | submitters | finished/s | e2e p50 ms | e2e p99 ms | queue p50 ms | "
             "errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        queue = f"{r.queue_p50_ms:.1f}" if r.queue_p50_ms is not None else "-"
        lines.append(f"| {r.mode} | {r.clients} | {r.rate:,.0f} | {r.p50_ms:.1f} | "
                     f"{r.p99_ms:.1f} | {queue} | {r.errors} |")
    return "\n".join(lines)


def overhead(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        if r.mode == "predict":
            continue
        base = next(p for p in rows if p.mode == "predict" and p.clients == r.clients)
        if r.rate and base.rate:
            cost = (1 / r.rate - 1 / base.rate) * 1000
            lines.append(f"- {r.mode}, {r.clients} submitters: {cost:+.2f} ms per job "
                         f"(1/{r.rate:,.0f} - 1/{base.rate:,.0f} s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per row")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--no-drain", action="store_true", help="skip the wrk fill/drain part")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed (Debian: apt-get install redis-server)")
    clients = [int(c) for c in args.clients.split(",")]
    counts = [int(c) for c in args.workers.split(",")]
    workload = WORKLOADS["tiny"]
    body = workload.body()

    from sheaf_backend_chronos import testing

    rows: list[Row] = []
    drains: list[Drain] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-jobs-") as tmp:
        workdir = Path(tmp)
        model_dir = getattr(testing, workload.build)(workdir / "model")
        limit = InProcess(workload, model_dir).row(64, args.duration)
        model_ms = 1000 / limit.rps
        with redis_server(workdir) as url:
            port = _free_port()
            config = {
                "server": {"host": "127.0.0.1", "port": port},
                "models": [{"name": workload.name, "backend": "chronos",
                            "backend_kwargs": {"model_id": str(model_dir)},
                            "batching": {"max_batch_size": MAX_BATCH, "max_wait_ms": 2}}],
                "jobs": {"redis_url": url, "concurrency": 64, "max_queued": 1_000_000},
            }
            path = workdir / "sheaf.yaml"
            with serve_config(config, path) as (base, _):
                for c in clients:
                    print(f"predict, {c} clients …", file=sys.stderr, flush=True)
                    latencies, _, errors = asyncio.run(closed_loop(
                        base, c, args.duration, predict_once(workload.name, body)))
                    rows.append(row("predict", c, args.duration, latencies, None, errors))
                for count in counts:
                    mode = f"jobs ({count} worker{'s' if count > 1 else ''})"
                    with workers(path, count, workdir):
                        for c in clients:
                            print(f"{mode}, {c} submitters …", file=sys.stderr, flush=True)
                            latencies, queue, errors = asyncio.run(closed_loop(
                                base, c, args.duration,
                                job_once(workload.name, body, args.poll_ms / 1000)))
                            rows.append(row(mode, c, args.duration, latencies, queue, errors))
                if not args.no_drain:
                    for count in counts:
                        print(f"drain with {count} workers …", file=sys.stderr, flush=True)
                        drains.append(drain(base, url, path, workdir, count,
                                            max(2, round(args.duration / 2)), model_ms))
    body_lines = ["", "## Submitters in Python (httpx), polling", "", table(rows), "",
                  "The difference per job with the same clients (1/jobs rate - 1/predict "
                  "rate; the Python client's own CPU is in both):", "", *overhead(rows), ""]
    if drains:
        body_lines += ["## The queue alone: wrk fills it, the workers drain it", "",
                       drain_table(drains), "",
                       "queue overhead = worker CPU per job - the model's in-process cost "
                       "per request + Redis CPU per job.", ""]
    body_lines += [
                  f"Polling every {args.poll_ms:g} ms; `queue p50` is the jobs' own "
                  "created→finished time. Server, workers, Redis and clients share the "
                  "machine."]
    publish("jobs_throughput", body_lines, [*rows, *drains], not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
