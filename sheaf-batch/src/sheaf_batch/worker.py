"""What runs on Ray workers: one chunk at a time, through the engine's request path —
parse and model checks (`ModelRuntime.parse`/`check`), `predict_each` (one call per batch, a
failing request retried alone so it fails by itself), `encode` — then a checkpoint.

The backend is loaded once per process: `ChunkActor` holds one per actor; stateless tasks
share a per-process cache (`_runtime`), so a worker process that runs many tasks loads once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheaf_batch.checkpoints import WorkDir
from sheaf_batch.sources import Chunk, Source
from sheaf_core.contracts.base import BaseRequest
from sheaf_core.spec import ModelSpec
from sheaf_server.engine import Engine, EngineError, ModelRuntime, RequestInvalid
from sheaf_server.engine.loading import load_model
from sheaf_server.engine.model import predict_each

log = logging.getLogger("sheaf.batch")


@dataclass(frozen=True)
class JobContext:
    """Everything a worker needs, shipped with each task or to each actor."""

    spec: ModelSpec
    source: str
    work_dir: str
    storage_options: dict[str, Any]
    batch_size: int
    plugins: tuple[object, ...] = ()


_runtimes: dict[str, ModelRuntime] = {}


def _runtime(job: JobContext) -> ModelRuntime:
    """This process's loaded model for `job.spec`, loaded on first use."""
    key = job.spec.model_dump_json()
    runtime = _runtimes.get(key)
    if runtime is None:
        _configure_torch()
        engine = Engine([job.spec], plugins=job.plugins)
        runtime = engine.runtimes[job.spec.name]
        load_model(runtime.backend, runtime.features, runtime.contract.response,
                   warmup=job.spec.warmup)
        _runtimes[key] = runtime
    return runtime


def _configure_torch() -> None:
    """One torch thread per worker: Ray runs a worker per CPU, and more threads than cores
    made a tiny model 50 times slower on a busy machine."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def run_chunks(batch: dict[str, np.ndarray], job: JobContext) -> dict[str, np.ndarray]:
    """Ray Data task (compute='tasks'): the chunks of `batch`, with the process's backend."""
    return _run(_runtime(job), job, batch)


class ChunkActor:
    """Ray Data actor (compute='actors'): loads the backend once, then runs chunks."""

    def __init__(self, job: JobContext) -> None:
        self.job = job
        self.runtime = _runtime(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _run(self.runtime, self.job, batch)


def _run(runtime: ModelRuntime, job: JobContext,
         batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    source = Source(job.source, job.storage_options)
    work = WorkDir(job.work_dir, job.storage_options)
    counts: dict[str, list[int]] = {"index": [], "rows": [], "ok": [], "failed": []}
    for i in range(len(batch["index"])):
        chunk = Chunk(**{field: int(batch[field][i]) for field in
                         ("index", "first_line", "lines", "rows", "offset")})
        ok, failed = run_chunk(runtime, job, source, work, chunk)
        for key, value in (("index", chunk.index), ("rows", chunk.rows), ("ok", ok),
                           ("failed", failed)):
            counts[key].append(value)
    return {key: np.array(values) for key, values in counts.items()}


def run_chunk(runtime: ModelRuntime, job: JobContext, source: Source, work: WorkDir,
              chunk: Chunk) -> tuple[int, int]:
    """Answer every row of `chunk` and checkpoint it; (rows answered, rows failed). Rows the
    driver found invalid are skipped here (they are in the rejects file)."""
    requests: list[tuple[int, BaseRequest]] = []
    errors: list[bytes] = []
    for line, text in source.rows(chunk):
        try:
            request = runtime.parse(text)
        except RequestInvalid:
            continue  # reported by the driver's validation
        try:
            # features it names, from the model's store; then the model's own refusals,
            # which need its weights: here
            request = runtime.complete(request)
        except EngineError as exc:
            errors.append(_error(line, request, exc.message, exc.problems))
            continue
        requests.append((line, request))
    responses: list[bytes] = []
    for start in range(0, len(requests), job.batch_size):
        batch = requests[start:start + job.batch_size]
        for (line, request), result in zip(
                batch, predict_each(runtime.backend, [r for _, r in batch]), strict=True):
            if isinstance(result, Exception):
                errors.append(_error(line, request, f"{type(result).__name__}: {result}"))
                continue
            result.request_id = request.request_id or f"line-{line}"
            result.model_name = runtime.name
            responses.append(runtime.encode(result))
    work.write_chunk(chunk.index, responses, errors,
                     {"rows": chunk.rows, "ok": len(responses), "failed": len(errors)})
    return len(responses), len(errors)


def _error(line: int, request: BaseRequest, message: str,
           problems: Iterable[Any] = ()) -> bytes:
    return json.dumps({
        "line": line, "request_id": request.request_id or f"line-{line}", "error": message,
        "fields": [{"field": p.field, "message": p.message} for p in problems],
    }).encode()
