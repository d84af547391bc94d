"""`BatchRunner`: a ModelSpec's backend over a whole source, on Ray Data.

    runner = BatchRunner(model_spec=spec)
    summary = runner.run(BatchSpec(source="in.jsonl", sink="out.jsonl", batch_size=64))

1. The driver cuts the source into chunks (it reads lines, it parses no row).
2. Chunks not yet checkpointed run as a Ray Data `map_batches` over chunk descriptors —
   stateless tasks or an actor pool — each worker reading its chunk itself, parsing and
   validating each row once (invalid ones set aside), answering the rest through the
   engine's request path and checkpointing the chunk. The driver holds descriptors and
   counters only. With `on_invalid: fail` an invalid row stops the model everywhere; the
   rows are still all checked, so that every invalid one is listed.
3. Parts are joined in chunk order into the sink (JSONL or Parquet) and the errors and
   rejects files: one response per valid row, in input order, whatever order chunks
   finished in. With `fail` and an invalid row, only the rejects file is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import fsspec

from sheaf_batch.checkpoints import WorkDir
from sheaf_batch.sinks import write_sink
from sheaf_batch.sources import Source
from sheaf_batch.spec import BatchSpec
from sheaf_batch.validation import InvalidRows, chunks
from sheaf_batch.worker import COUNTS, ChunkActor, JobContext, run_chunks, warm
from sheaf_core.spec import ModelSpec
from sheaf_server.engine import Engine

log = logging.getLogger("sheaf.batch")


@dataclass
class BatchSummary:
    rows: int
    ok: int
    rejected: int
    failed: int
    seconds: float
    resumed_chunks: int
    sink: str
    errors: str
    rejects: str

    def __str__(self) -> str:
        rate = self.ok / self.seconds if self.seconds else 0.0
        resumed = f"; {self.resumed_chunks} chunks from checkpoints" if self.resumed_chunks else ""
        return (f"{self.rows} rows: {self.ok} ok → {self.sink}, {self.rejected} rejected → "
                f"{self.rejects}, {self.failed} failed → {self.errors}; {self.seconds:.1f}s "
                f"({rate:,.0f} rows/s){resumed}")


#: The bounds of `chunk_rows: auto`: below, scheduling dominates small models; above, a
#: killed job redoes too much and a worker holds too many rows.
MIN_AUTO_CHUNK, MAX_AUTO_CHUNK = 1024, 65_536


def auto_chunk_rows(rows: int, parallelism: int) -> int:
    """About two chunks per worker, within MIN_AUTO_CHUNK..MAX_AUTO_CHUNK rows."""
    return max(MIN_AUTO_CHUNK, min(MAX_AUTO_CHUNK, math.ceil(rows / (2 * parallelism))))


def _settle(warming: list) -> None:
    """Collect the warm-up tasks (a failed load is the job's error already, raised by the
    chunk that met it; collected, Ray does not report it again as unhandled)."""
    if not warming:
        return
    import ray

    for ref in warming:
        with contextlib.suppress(Exception):
            ray.get(ref)


def _answered(counts: dict[str, int]) -> int:
    """Rows a finished chunk accounts for (answered, failed, or set aside as invalid)."""
    return counts["ok"] + counts["failed"] + counts.get("rejected", 0)


class BatchRunner:
    """Runs jobs for one model. `plugins`: in-process plugin objects (as for the servers);
    `address`: a Ray cluster to join (default: the one this process is connected to, else a
    local one); `progress`: a progress bar on stderr."""

    def __init__(self, model_spec: ModelSpec, *, plugins: Iterable[object] = (),
                 address: str | None = None, progress: bool = True) -> None:
        self.spec = model_spec
        self.plugins = tuple(plugins)
        self.address = address
        self.progress = progress
        # Constructs the backend (no weights): a bad spec fails here, before any work.
        Engine([model_spec], plugins=self.plugins)

    def run(self, job: BatchSpec) -> BatchSummary:
        started = time.perf_counter()
        job = job.for_model(self.spec)  # unset batch size and resources: the model's
        options = job.storage_options
        source = Source(job.source, options)
        work = WorkDir(job.work_path, options)
        assert job.batch_size is not None, "for_model fills it in from the model"
        context = JobContext(self.spec, job.source, job.work_path, options, job.batch_size,
                             self.plugins, stop_on_invalid=job.on_invalid == "fail")
        warming = self._warm(job, context)
        try:
            chunk_rows = self._chunk_rows(job, source, work)
            planned = chunks(source, chunk_rows)
            work.claim({"model": self.spec.model_dump(mode="json"),
                        "source": source.fingerprint(), "chunk_rows": chunk_rows,
                        "on_invalid": job.on_invalid})
            done = work.done()
            pending = [c for c in planned.chunks if c.index not in done]
            resumed = sum(_answered(done[c.index]) for c in planned.chunks if c.index in done)
            if pending:
                self._execute(job, context, pending, total=planned.rows, initial=resumed)
        finally:
            _settle(warming)
        indices = [c.index for c in planned.chunks]
        if context.stop_on_invalid and work.invalid_seen():
            self._fail_on_invalid(job, work, indices)
        counts = work.done()
        write_sink(work, indices, job.sink, options)
        with fsspec.open(job.errors_path, "wb", **options) as errors:
            work.copy_parts(indices, "errors.jsonl", errors)
        with fsspec.open(job.rejects_path, "wb", **options) as rejects:
            work.copy_parts(indices, "rejects.jsonl", rejects)
        work.remove()
        return BatchSummary(
            rows=planned.rows, ok=sum(counts[i]["ok"] for i in indices),
            rejected=sum(counts[i].get("rejected", 0) for i in indices),
            failed=sum(counts[i]["failed"] for i in indices),
            seconds=time.perf_counter() - started, resumed_chunks=len(done), sink=job.sink,
            errors=job.errors_path, rejects=job.rejects_path)

    def _fail_on_invalid(self, job: BatchSpec, work: WorkDir, indices: list[int]) -> None:
        """`on_invalid: fail` and a row was invalid: every chunk has been checked (run or
        not); write the rejects file, remove the checkpoints (no output is written) and
        raise `InvalidRows` naming the first ones."""
        options = job.storage_options
        counts = {**work.done(), **work.checked()}
        rejected = sum(counts[i].get("rejected", 0) for i in indices)
        with fsspec.open(job.rejects_path, "wb", **options) as rejects:
            work.copy_parts(indices, "rejects.jsonl", rejects)
        work.remove()
        raise InvalidRows.listed_in(rejected, job.rejects_path, options)

    def _chunk_rows(self, job: BatchSpec, source: Source, work: WorkDir) -> int:
        """The job's chunk size: as set; or, for `auto`, the size its checkpoints were cut
        with (a resumed job must cut alike), else about two chunks per worker — each chunk
        is a Ray task, and with fewer, larger ones scheduling no longer dominates a small
        model's job (10k rows, 2 cores: 1,024-row chunks 1.4 s, 2,500-row chunks 1.05 s)."""
        if job.chunk_rows != "auto":
            return job.chunk_rows
        recorded = work.identity()
        if recorded is not None and recorded.get("source") == source.fingerprint():
            return int(recorded["chunk_rows"])
        return auto_chunk_rows(source.estimate_rows(), self._parallelism(job))

    def _parallelism(self, job: BatchSpec) -> int:
        """How many chunks run at once: the actors, or the tasks the cluster's CPUs fit."""
        if job.compute == "actors":
            return job.num_actors
        if job.concurrency:
            return job.concurrency
        import ray

        self._connect()
        cpus = float(ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // (job.num_cpus or 1)))

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False)

    def _warm(self, job: BatchSpec, context: JobContext) -> list:
        """`compute: tasks`: one task per worker the job will use, each loading the model
        into its worker process (kept there for later tasks and jobs), started before the
        driver cuts the source so that the loads overlap it and Ray Data's start. Actors
        load in their constructor, once per job (a job starts its own pool)."""
        if job.compute != "tasks":
            return []
        import ray

        task = ray.remote(warm).options(num_cpus=job.num_cpus if job.num_cpus is not None
                                        else 1, num_gpus=job.num_gpus or 0)
        return [task.remote(context) for _ in range(self._parallelism(job))]

    def _execute(self, job: BatchSpec, context: JobContext, pending: list, total: int,
                 initial: int) -> None:
        import ray
        from tqdm import tqdm

        self._connect()
        with ray.data.DataContext.current(_data_context()):
            items = [asdict(c) for c in pending]
            descriptors = ray.data.from_items(items, override_num_blocks=len(items))
            if job.compute == "actors":
                dataset = descriptors.map_batches(
                    ChunkActor, fn_constructor_kwargs={"job": context}, batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=job.num_actors),
                    num_cpus=job.num_cpus, num_gpus=job.num_gpus)
            else:
                compute = ray.data.TaskPoolStrategy(size=job.concurrency) \
                    if job.concurrency else None
                dataset = descriptors.map_batches(
                    run_chunks,  # type: ignore[arg-type]  # Ray's protocol omits fn_kwargs
                    fn_kwargs={"job": context}, batch_size=1, compute=compute,
                    num_cpus=job.num_cpus, num_gpus=job.num_gpus)
            with tqdm(total=total, initial=initial, unit="rows", desc=self.spec.name,
                      disable=not self.progress, file=sys.stderr, dynamic_ncols=True,
                      smoothing=0.1) as bar:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    bar.update(int(sum(batch[key].sum() for key in COUNTS if key != "rows")))


def _data_context() -> Any:
    """The job's Ray Data settings, on a copy of the driver's (set for the job only, not
    for the caller's other datasets): our progress bar counts rows, not blocks; and no
    per-operator resource reservation — with it Ray Data (2.60) started the second
    chunk's task a second after the first on every warm job (4 chunks on 2 CPUs: 4.2 s
    instead of 3.05 s for 1.5 s chunks; bench/batch_throughput.py)."""
    import ray

    context = ray.data.DataContext.get_current().copy()
    context.enable_progress_bars = False
    context.op_resource_reservation_enabled = False
    return context
