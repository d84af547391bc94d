"""What runs on Ray workers: one chunk at a time, its rows parsed and sent as typed calls
into the engine's request path (`request_path.answer_rows`: features, checks, the backend
in batches — a failing row retried alone so it fails by itself — failures translated as the
servers translate them, stamped, encoded), then a checkpoint.

The backend is loaded once per process: `ChunkActor` holds one per actor; stateless tasks
share a per-process cache (`_runtime`), so a worker process that runs many tasks loads once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheaf_batch.checkpoints import WorkDir
from sheaf_batch.sources import Chunk, Source
from sheaf_batch.validation import reject_record
from sheaf_core.errors import InvalidRequest, RequestError
from sheaf_core.spec import ModelSpec
from sheaf_server.engine import BackendFailed, Call, Engine, ModelRuntime, request_path
from sheaf_server.engine.loading import load_model

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
    #: `on_invalid: skip`: rows are validated here, as they are parsed, and invalid ones
    #: written to the chunk's rejects part (with `fail` the driver validated every row).
    rejects_here: bool = False


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
    counts: dict[str, list[int]] = {"index": [], "rows": [], "ok": [], "failed": [],
                                    "rejected": []}
    for i in range(len(batch["index"])):
        chunk = Chunk(**{field: int(batch[field][i]) for field in
                         ("index", "first_line", "lines", "rows", "offset")})
        done = run_chunk(runtime, job, source, work, chunk)
        for key, value in (("index", chunk.index), ("rows", chunk.rows), ("ok", done["ok"]),
                           ("failed", done["failed"]), ("rejected", done["rejected"])):
            counts[key].append(value)
    return {key: np.array(values) for key, values in counts.items()}


def run_chunk(runtime: ModelRuntime, job: JobContext, source: Source, work: WorkDir,
              chunk: Chunk) -> dict[str, int]:
    """Answer every row of `chunk` and checkpoint it; its counts (ok, failed, rejected).
    An invalid row is written to the chunk's rejects part when this worker validates
    (`rejects_here`); else the driver already reported it."""
    calls: list[Call] = []
    lines: list[int] = []
    rejects: list[bytes] = []
    validate = runtime.contract.request.model_validate_json
    for line, text in source.rows(chunk):
        try:
            request = request_path.parse(validate, text)
        except InvalidRequest as exc:
            if job.rejects_here:
                rejects.append(json.dumps(reject_record(line, text, exc)).encode())
            continue
        calls.append(Call(runtime.name, f"line-{line}", request=request, id_generated=True))
        lines.append(line)
    responses: list[bytes] = []
    errors: list[bytes] = []
    for line, result in zip(lines, request_path.answer_rows(runtime, calls, job.batch_size),
                            strict=True):
        if isinstance(result, RequestError):
            errors.append(_error(line, result))
        else:
            responses.append(result)
    counts = {"rows": chunk.rows, "ok": len(responses), "failed": len(errors),
              "rejected": len(rejects)}
    work.write_chunk(chunk.index, responses, errors, counts,
                     rejects if job.rejects_here else None)
    return counts


def _error(line: int, exc: RequestError) -> bytes:
    """An errors-file record: the line, the id, the servers' error `code` and fields — and,
    for a backend failure, the exception itself (a server keeps it in its log; this file is
    the job's log)."""
    cause = exc.__cause__
    message = (f"{type(cause).__name__}: {cause}"
               if isinstance(exc, BackendFailed) and cause is not None else exc.message)
    return json.dumps({
        "line": line, "request_id": exc.request_id, "code": exc.code, "error": message,
        "fields": [{"field": p.field, "message": p.message} for p in exc.problems],
    }).encode()
