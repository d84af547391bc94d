"""Offline throughput: sheaf-batch on Ray Data vs the backend's own loop, in one run.

For N rows (default 100,000) of tiny Chronos-Bolt (random weights, built here, loaded
through `from_pretrained`), history 128, horizon 16, quantiles 0.1/0.5/0.9, batch size 64:

  limit        in this process: `ChronosBackend.predict` over the parsed rows in batches
               of 64, one torch thread — the hardware's figure for one core, no I/O, no JSON;
  engine path  in this process, no Ray: the driver's chunk cut, then each chunk through the
               workers' code (`run_chunk`: read, parse once, check, predict_each, encode,
               checkpoint) — what sheaf-batch itself costs per row;
  tasks        `BatchRunner` with compute='tasks' (one CPU each) on a local Ray cluster:
               first job (worker processes import torch and chronos and load the model),
               then jobs on the same cluster (warm workers reuse their loaded backend), with
               on_invalid fail and skip (both parse each row once, on the workers);
  actors       `BatchRunner` with compute='actors', one actor per core (a job starts its
               own actor pool, so every job pays the imports and the load).

Job rows are timed from `run()` to its return: the warm-up tasks, the chunk cut, Ray Data
scheduling, reading chunks, parsing, predicting, encoding, checkpoints and the final join —
everything but starting the cluster. "per core" divides by the cores the workers use, to
compare with the one-core limit (goal: >= 80%). The first job's fixed cost is its time
less the next job's.

    ./dev bench-batch                 # the committed run: writes bench/results/batch_throughput.*
    ./dev bench-batch --rows 2000 --no-save
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from serve_overhead import publish

BATCH = 64


@dataclass
class Row:
    mode: str
    rows: int
    seconds: float
    rows_per_s: float
    cores: int
    per_core: float
    share_of_limit: float | None = None


def requests_file(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        for i in range(rows):
            history = [round(10 + math.sin((i + t) / 7) + 0.01 * t, 4) for t in range(128)]
            f.write(json.dumps({"history": history, "horizon": 16, "output_mode": "quantiles",
                                "quantile_levels": [0.1, 0.5, 0.9]}) + "\n")
    return path


def limit(model_dir: Path, source: Path) -> Row:
    import torch

    from sheaf_backend_chronos.backend import ChronosBackend
    from sheaf_core.contracts.time_series import TimeSeriesRequest

    torch.set_num_threads(1)
    backend = ChronosBackend(model_id=str(model_dir))
    backend.load()
    requests = [TimeSeriesRequest.model_validate_json(line) for line in source.open()]
    backend.predict(requests[:BATCH])  # warm up
    started = time.perf_counter()
    for start in range(0, len(requests), BATCH):
        backend.predict(requests[start:start + BATCH])
    seconds = time.perf_counter() - started
    rate = len(requests) / seconds
    return Row("limit (in-process predict loop)", len(requests), seconds, rate, 1, rate)


def engine_path(model_dir: Path, source: Path, workdir: Path) -> Row:
    """The driver's chunk cut, then each chunk through the workers' code in this process
    (`run_chunk`: read, parse once, check, predict_each, encode, checkpoint)."""
    from sheaf_batch.checkpoints import WorkDir
    from sheaf_batch.sources import Source
    from sheaf_batch.validation import chunks
    from sheaf_batch.worker import JobContext, _runtime, run_chunk
    from sheaf_core import ModelSpec

    spec = ModelSpec(name="bolt", backend="chronos", backend_kwargs={"model_id": str(model_dir)})
    context = JobContext(spec, str(source), str(workdir / "engine.parts"), {}, BATCH)
    runtime = _runtime(context)
    work = WorkDir(context.work_dir)
    work.fs.makedirs(work.root, exist_ok=True)
    started = time.perf_counter()
    planned = chunks(Source(str(source)), 25_000)
    for chunk in planned.chunks:
        run_chunk(runtime, context, Source(str(source)), work, chunk)
    seconds = time.perf_counter() - started
    rate = planned.rows / seconds
    return Row("engine path in-process (no Ray)", planned.rows, seconds, rate, 1, rate)


def job(mode: str, model_dir: Path, source: Path, workdir: Path, cores: int,
        label: str, on_invalid: str = "fail") -> Row:
    from sheaf_batch import BatchRunner, BatchSpec
    from sheaf_core import ModelSpec

    spec = ModelSpec(name="bolt", backend="chronos", backend_kwargs={"model_id": str(model_dir)})
    runner = BatchRunner(spec, progress=False)
    sink = workdir / f"{mode}.jsonl"
    started = time.perf_counter()
    summary = runner.run(BatchSpec(source=str(source), sink=str(sink), batch_size=BATCH,
                                   compute=mode, num_actors=cores, num_cpus=1,
                                   on_invalid=on_invalid))
    seconds = time.perf_counter() - started
    assert summary.ok == summary.rows, summary
    rate = summary.ok / seconds
    return Row(f"sheaf-batch {mode}, {label}, on_invalid {on_invalid}", summary.ok, seconds,
               rate, cores, rate / cores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from sheaf_backend_chronos.testing import save_tiny_bolt

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-batch-") as tmp:
        workdir = Path(tmp)
        model_dir = save_tiny_bolt(workdir / "bolt")
        source = requests_file(workdir / "in.jsonl", args.rows)
        print("limit …", file=sys.stderr, flush=True)
        rows.append(limit(model_dir, source))
        print("engine path …", file=sys.stderr, flush=True)
        rows.append(engine_path(model_dir, source, workdir))
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        print("tasks …", file=sys.stderr, flush=True)
        rows.append(job("tasks", model_dir, source, workdir, cores, "first job"))
        rows.append(job("tasks", model_dir, source, workdir, cores, "next job"))
        rows.append(job("tasks", model_dir, source, workdir, cores, "next job", "skip"))
        print("actors …", file=sys.stderr, flush=True)
        rows.append(job("actors", model_dir, source, workdir, cores, "any job"))
        ray.shutdown()
    for row in rows:
        row.share_of_limit = row.per_core / rows[0].per_core
    lines = ["| mode | rows | seconds | rows/s | cores | rows/s per core | % of limit per core |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.mode} | {r.rows:,} | {r.seconds:.1f} | {r.rows_per_s:,.0f} | {r.cores} | "
              f"{r.per_core:,.0f} | {100 * (r.share_of_limit or 0):.0f}% |" for r in rows]
    first, warm = rows[2], rows[3]
    publish("batch_throughput", [
        f"{args.rows:,} rows of tiny Chronos-Bolt (history 128, horizon 16, quantiles), "
        f"batch size {BATCH}, chunk_rows auto (jobs; 25,000 for the engine path); one "
        "torch thread per worker. Each row is parsed once, on a worker. Job rows include "
        "the warm-up tasks, the chunk cut, scheduling, I/O, JSON, checkpoints and the final "
        "join, but not starting the cluster.", "",
        *lines, "",
        f"First job's fixed cost (first job less the next, same rows): "
        f"{first.seconds - warm.seconds:.1f} s."], rows, not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
