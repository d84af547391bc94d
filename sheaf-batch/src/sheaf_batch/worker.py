"""What runs on Ray workers: one chunk at a time, each row parsed once (and validated: the
driver does not parse rows) and sent, `batch_size` at a time, as typed calls into the
engine's request path (`request_path.answer_rows`: features, checks, the backend — a
failing row retried alone so it fails by itself — failures translated as the servers
translate them, stamped, encoded), then a checkpoint. A chunk holds at most one batch of
parsed requests: parsed objects are what a garbage collection walks.

The backend is loaded once per process: `ChunkActor` holds one per actor; stateless tasks
share a per-process cache (`_runtime`), so a worker process that runs many tasks loads once.
"""

from __future__ import annotations

import gc
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
    #: `on_invalid: fail`: once an invalid row is found (here or by another worker), rows
    #: are only checked, not run (see `sheaf_batch.validation`).
    stop_on_invalid: bool = True


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
        # The imports and the model are here for good: keep the collector from walking
        # them again at every full collection while chunks allocate rows.
        gc.freeze()
    return runtime


def _configure_torch() -> None:
    """One torch thread per worker: Ray runs a worker per CPU, and more threads than cores
    made a tiny model 50 times slower on a busy machine."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def warm(job: JobContext) -> None:
    """Ray task: load `job`'s model into this worker process ahead of its chunks (they
    then find it in `_runtimes`), while the driver cuts the source and Ray Data starts."""
    _runtime(job)


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
    counts: dict[str, list[int]] = {key: [] for key in ("index", *COUNTS)}
    for i in range(len(batch["index"])):
        chunk = Chunk(**{field: int(batch[field][i]) for field in
                         ("index", "first_line", "lines", "rows", "offset")})
        done = run_chunk(runtime, job, source, work, chunk)
        counts["index"].append(chunk.index)
        for key in COUNTS:
            counts[key].append(done.get(key, 0))
    return {key: np.array(values) for key, values in counts.items()}


#: What a chunk reports: its rows, answered, failed, set aside as invalid, and checked but
#: not run (`on_invalid: fail` after an invalid row).
COUNTS = ("rows", "ok", "failed", "rejected", "unrun")


def run_chunk(runtime: ModelRuntime, job: JobContext, source: Source, work: WorkDir,
              chunk: Chunk) -> dict[str, int]:
    """Answer every row of `chunk` and checkpoint it; its counts (`COUNTS`). Each row is
    parsed once; an invalid one goes to the chunk's rejects part. With `stop_on_invalid`
    the model stops running (here at once, elsewhere at their next chunk) once a row is
    invalid, and the chunk is only checked."""
    validate = runtime.contract.request.model_validate_json
    running = not (job.stop_on_invalid and work.invalid_seen())
    responses: list[bytes] = []
    errors: list[bytes] = []
    rejects: list[bytes] = []
    lines: list[int] = []
    calls: list[Call] = []
    checked_only = 0

    def answer() -> None:
        results = request_path.answer_rows(runtime, calls, job.batch_size)
        for line, result in zip(lines, results, strict=True):
            if isinstance(result, RequestError):
                errors.append(_error(line, result))
            else:
                responses.append(result)
        lines.clear()
        calls.clear()

    for line, text in source.rows(chunk):
        try:
            request = request_path.parse(validate, text)
        except InvalidRequest as exc:
            rejects.append(json.dumps(reject_record(line, text, exc)).encode())
            if running and job.stop_on_invalid:
                running = False
                checked_only += len(calls)  # parsed, never to be run
                calls.clear()
                lines.clear()
                work.flag_invalid()
            continue
        if not running:
            checked_only += 1
            continue
        calls.append(Call(runtime.name, f"line-{line}", request=request, id_generated=True))
        lines.append(line)
        if len(calls) == job.batch_size:
            answer()
    if running:
        answer()
        counts = {"rows": chunk.rows, "ok": len(responses), "failed": len(errors),
                  "rejected": len(rejects)}
        work.write_chunk(chunk.index, responses, errors, rejects, counts)
        return counts
    # Rows answered before the flag count as checked: the job writes no output.
    counts = {"rows": chunk.rows, "rejected": len(rejects),
              "unrun": checked_only + len(responses) + len(errors)}
    work.write_checked(chunk.index, rejects, counts)
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
