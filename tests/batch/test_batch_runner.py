"""BatchRunner on a real local Ray cluster: one response per valid row in input order under
both compute modes, invalid rows reported by line and field with no output written (or
skipped to a rejects file), a failing row isolated in the errors file, Parquet in, s3:// in
and out through a real S3 API, and a backend loaded once per worker, not per chunk."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_support import POISON, BatchTestPlugin
from feast_support import build_feature_repo

from sheaf_batch import BatchRunner, BatchSpec, InvalidRows
from sheaf_batch.checkpoints import WorkDir
from sheaf_batch.runner import auto_chunk_rows
from sheaf_batch.sources import Source
from sheaf_core import ModelSpec

pytestmark = pytest.mark.usefixtures("ray_session")


def row(i: int, first: float = 1.0) -> dict:
    return {"history": [first, 2.0, 3.0, float(i)], "horizon": 2}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: str, options: dict | None = None) -> list[dict]:
    with fsspec.open(path, "r", **(options or {})) as f:
        return [json.loads(line) for line in f if line.strip()]


def runner(**kwargs: object) -> BatchRunner:
    spec = ModelSpec(name="fc", backend="batch-test", backend_kwargs=kwargs)
    return BatchRunner(spec, plugins=[BatchTestPlugin()], progress=False)


@pytest.mark.parametrize("compute", ["tasks", "actors"])
def test_every_row_is_answered_in_input_order_under_skewed_cost(tmp_path: Path,
                                                               compute: str) -> None:
    # the first chunk is slow (30 ms a row), the others instant: chunks finish out of order
    rows = [row(i, first=30.0 if i < 10 else 0.0) for i in range(120)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    sink = tmp_path / "out.jsonl"
    summary = runner(skew=True).run(BatchSpec(
        source=str(source), sink=str(sink), batch_size=4, chunk_rows=10, compute=compute,
        num_actors=2, num_cpus=0.5))
    out = read_jsonl(str(sink))
    assert [r["request_id"] for r in out] == [f"line-{i + 1}" for i in range(120)]
    assert [r["mean"] for r in out] == [[float(i)] * 2 for i in range(120)]
    assert summary.ok == 120 and summary.failed == summary.rejected == 0
    assert read_jsonl(summary.errors) == [] and not Path(f"{sink}.parts").exists()


@pytest.mark.parametrize("chunk_rows", [1000, 2])
def test_invalid_rows_are_reported_by_line_and_field_and_no_output_is_written(
        tmp_path: Path, chunk_rows: int) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [
        row(0), {"history": [1, "x"], "horizon": 2}, row(2), "{not json", "",
        {"history": [1, 2], "horizon": 0, "colour": 1}])
    sink = tmp_path / "out.jsonl"
    with pytest.raises(InvalidRows) as info:
        runner().run(BatchSpec(source=str(source), sink=str(sink), chunk_rows=chunk_rows))
    message = str(info.value)
    assert message.startswith("3 invalid rows; no output was written")
    assert "line 2: history.1:" in message and "line 4: body" in message
    assert "line 6: horizon:" in message and "colour: unknown field" in message
    rejects = read_jsonl(f"{sink}.rejects.jsonl")
    assert [r["line"] for r in rejects] == [2, 4, 6]
    assert not sink.exists() and not Path(f"{sink}.parts").exists()


def test_with_fail_an_invalid_row_stops_the_model_and_every_invalid_row_is_still_listed(
        tmp_path: Path) -> None:
    """Rows are parsed once, on the workers (the driver only cuts chunks). The first invalid
    row stops the model — in its worker at once, in the others at their next chunk — and
    the remaining rows are still checked, so the rejects file lists every invalid row."""
    rows: list = [row(i) for i in range(60)]
    rows[0] = {"history": [1, "x"], "horizon": 2}
    rows[59] = {"history": [], "horizon": 2}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    sink = tmp_path / "out.jsonl"
    predicted = tmp_path / "predicted.log"
    with pytest.raises(InvalidRows) as info:
        runner(predict_log=str(predicted)).run(BatchSpec(
            source=str(source), sink=str(sink), chunk_rows=2, batch_size=1, concurrency=1))
    assert info.value.count == 2
    assert [r["line"] for r in read_jsonl(f"{sink}.rejects.jsonl")] == [1, 60]
    # one chunk at a time, the first holding the first invalid row: no row ever ran (the
    # log holds the model's own warm-up requests only)
    ran = [json.loads(line) for line in predicted.read_text().splitlines()]
    assert not [history for history in ran if history in [r["history"] for r in rows[1:59]]]
    assert not sink.exists() and not Path(f"{sink}.parts").exists()


def test_with_on_invalid_skip_rejects_are_set_aside_and_the_rest_runs(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [row(0), {"history": [], "horizon": 2},
                                                 row(2), {"horizon": 2, "history": [1] * 3,
                                                          "request_id": "mine"}])
    sink = tmp_path / "out.jsonl"
    summary = runner().run(BatchSpec(source=str(source), sink=str(sink), on_invalid="skip"))
    assert [r["request_id"] for r in read_jsonl(str(sink))] == ["line-1", "line-3", "mine"]
    assert [r["line"] for r in read_jsonl(summary.rejects)] == [2]
    assert (summary.rows, summary.ok, summary.rejected) == (4, 3, 1)


def test_with_skip_the_workers_set_invalid_rows_aside_chunk_by_chunk_in_line_order(
        tmp_path: Path) -> None:
    """With `skip` each row is parsed once, on a worker: the rejects file is the chunks'
    rejects joined in order, each record as the driver would have written it."""
    rows: list = [row(i) for i in range(9)]
    rows[1] = {"history": [1, "x"], "horizon": 2}
    rows[4] = "{not json"
    rows[8] = {"history": [1, 2], "horizon": 0}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    sink = tmp_path / "out.jsonl"
    summary = runner().run(BatchSpec(source=str(source), sink=str(sink), on_invalid="skip",
                                     chunk_rows=2))
    rejects = read_jsonl(summary.rejects)
    assert [r["line"] for r in rejects] == [2, 5, 9]
    assert rejects[0]["fields"][0]["field"] == "history.1"
    assert rejects[1]["row"] == "{not json" and rejects[2]["fields"][0]["field"] == "horizon"
    assert [r["request_id"] for r in read_jsonl(str(sink))] == [
        f"line-{i}" for i in (1, 3, 4, 6, 7, 8)]
    assert (summary.rows, summary.ok, summary.rejected, summary.failed) == (9, 6, 3, 0)


def test_a_row_that_fails_in_the_backend_goes_to_the_errors_file(tmp_path: Path) -> None:
    rows = [row(i) for i in range(30)]
    rows[17]["history"][1] = POISON
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    sink = tmp_path / "out.jsonl"
    summary = runner().run(BatchSpec(source=str(source), sink=str(sink), batch_size=8,
                                     chunk_rows=10))
    assert [r["request_id"] for r in read_jsonl(str(sink))] == [
        f"line-{i + 1}" for i in range(30) if i != 17]
    [error] = read_jsonl(summary.errors)
    assert error["line"] == 18 and error["request_id"] == "line-18"
    assert error["error"] == "RuntimeError: the model choked on this series"
    assert (summary.ok, summary.failed) == (29, 1)


def test_a_model_refusal_names_the_field_in_the_errors_file(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [
        row(0), {"history": [1, 2, 3], "horizon": 2, "past_covariates": {"t": [1, 2, 3]}}])
    summary = runner().run(BatchSpec(source=str(source), sink=str(tmp_path / "out.jsonl")))
    [error] = read_jsonl(summary.errors)
    assert error["line"] == 2 and error["fields"][0]["field"] == "past_covariates"


def test_rows_may_name_their_history_in_the_feature_store(tmp_path: Path) -> None:
    repo = build_feature_repo(tmp_path / "feast")
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"horizon": 2, "features": {"feature_view": "sales_daily", "entity": {"store_id": key},
                                    "target": ["sales"]}} for key in (1, 2, 99)])
    spec = ModelSpec(name="fc", backend="batch-test", features={"repo_path": str(repo)})
    summary = BatchRunner(spec, plugins=[BatchTestPlugin()], progress=False).run(BatchSpec(
        source=str(source), sink=str(tmp_path / "out.jsonl"), batch_size=4))
    assert [r["mean"] for r in read_jsonl(str(tmp_path / "out.jsonl"))] == [[3.0] * 2,
                                                                           [7.0] * 2]
    [error] = read_jsonl(summary.errors)  # the unknown entity, by line and field
    assert error["line"] == 3 and "store_id=99" in error["error"]
    assert error["fields"][0]["field"] == "features.entity"


def test_parquet_rows_are_numbered_from_one_across_row_groups(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{"history": [1.0, 2.0, float(i)], "horizon": 1,
                                   "request_id": None} for i in range(25)])
    source = tmp_path / "in.parquet"
    pq.write_table(table, source, row_group_size=10)
    sink = tmp_path / "out.jsonl"
    runner().run(BatchSpec(source=str(source), sink=str(sink)))
    out = read_jsonl(str(sink))
    assert [r["request_id"] for r in out] == [f"line-{i + 1}" for i in range(25)]
    assert [r["mean"] for r in out] == [[float(i)] for i in range(25)]


def test_s3_in_and_out(s3: dict, tmp_path: Path) -> None:
    with fsspec.open("s3://jobs/in.jsonl", "w", **s3) as f:
        f.write("".join(json.dumps(row(i)) + "\n" for i in range(40)))
    summary = runner().run(BatchSpec(source="s3://jobs/in.jsonl", sink="s3://jobs/out.jsonl",
                                     chunk_rows=16, storage_options=s3))
    out = read_jsonl("s3://jobs/out.jsonl", s3)
    assert [r["request_id"] for r in out] == [f"line-{i + 1}" for i in range(40)]
    assert summary.ok == 40 and read_jsonl(summary.errors, s3) == []
    fs = fsspec.filesystem("s3", **s3)
    assert not fs.exists("jobs/out.jsonl.parts")


@pytest.mark.parametrize("compute", ["tasks", "actors"])
def test_on_s3_an_invalid_row_fails_the_job_with_every_worker_kind(s3: dict,
                                                                   compute: str) -> None:
    """The invalid-row flag lives in the work directory, on the job's storage: workers on
    S3 see it too, tasks or actors."""
    rows = [json.dumps(row(i)) for i in range(40)]
    rows[5], rows[33] = '{"horizon": 2}', "{not json"
    with fsspec.open(f"s3://jobs/bad-{compute}.jsonl", "w", **s3) as f:
        f.write("".join(r + "\n" for r in rows))
    sink = f"s3://jobs/bad-{compute}-out.jsonl"
    with pytest.raises(InvalidRows) as info:
        runner().run(BatchSpec(source=f"s3://jobs/bad-{compute}.jsonl", sink=sink,
                               chunk_rows=8, compute=compute, num_actors=2, num_cpus=0.5,
                               storage_options=s3))
    assert info.value.count == 2
    assert [r["line"] for r in read_jsonl(f"{sink}.rejects.jsonl", s3)] == [6, 34]
    fs = fsspec.filesystem("s3", **s3)
    assert not fs.exists(sink.removeprefix("s3://")) and \
        not fs.exists(sink.removeprefix("s3://") + ".parts")


def test_the_backend_loads_once_per_worker_process_not_per_chunk(tmp_path: Path) -> None:
    log = tmp_path / "loads.log"
    source = write_jsonl(tmp_path / "in.jsonl", [row(i) for i in range(200)])
    runner(load_log=str(log)).run(BatchSpec(source=str(source), sink=str(tmp_path / "o.jsonl"),
                                            chunk_rows=10))  # 20 chunks
    loads = log.read_text().split()
    assert len(loads) == len(set(loads)) <= 4  # one per worker process Ray used


def test_task_workers_stay_warm_for_the_next_job_of_the_same_runner(tmp_path: Path) -> None:
    """`compute: tasks`: the worker processes of one driver keep the loaded model, so the
    next job loads nothing (its warm-up tasks find the model there)."""
    log = tmp_path / "loads.log"
    source = write_jsonl(tmp_path / "in.jsonl", [row(i) for i in range(40)])
    bolt = runner(load_log=str(log))
    bolt.run(BatchSpec(source=str(source), sink=str(tmp_path / "first.jsonl"), chunk_rows=10))
    first = log.read_text().split()
    summary = bolt.run(BatchSpec(source=str(source), sink=str(tmp_path / "next.jsonl"),
                                 chunk_rows=10))
    assert summary.ok == 40 and first
    assert log.read_text().split() == first


def test_tiny_chronos_bolt_on_an_actor_pool_matches_the_backend_in_process(
        tmp_path: Path) -> None:
    from sheaf_backend_chronos.backend import ChronosBackend
    from sheaf_backend_chronos.testing import save_tiny_bolt
    from sheaf_core import TimeSeriesRequest

    model = save_tiny_bolt(tmp_path / "bolt")
    rows = [{"history": [10 + (i * j) % 7 for j in range(24)], "horizon": 4,
             "output_mode": "quantiles"} for i in range(40)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    spec = ModelSpec(name="bolt", backend="chronos", backend_kwargs={"model_id": str(model)})
    summary = BatchRunner(spec, progress=False).run(BatchSpec(
        source=str(source), sink=str(tmp_path / "out.jsonl"), compute="actors",
        num_actors=2, num_cpus=0.5, batch_size=16, chunk_rows=10))
    assert summary.ok == 40
    local = ChronosBackend(model_id=str(model))
    local.load()
    expected = local.predict([TimeSeriesRequest.model_validate(r) for r in rows])
    out = read_jsonl(str(tmp_path / "out.jsonl"))
    for got, want in zip(out, expected, strict=True):
        assert got["mean"] == pytest.approx(want.mean, rel=1e-5)
        assert got["quantiles"]["0.5"] == pytest.approx(want.quantiles["0.5"], rel=1e-5)


def test_a_parquet_sink_keeps_order_and_unifies_nested_fields(tmp_path: Path) -> None:
    rows = [row(i) for i in range(30)]
    for i in range(0, 30, 3):  # some rows ask for quantiles, at two different levels
        rows[i] = {**rows[i], "output_mode": "quantiles",
                   "quantile_levels": [0.1, 0.9] if i % 2 else [0.5]}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    sink = tmp_path / "out.parquet"
    runner().run(BatchSpec(source=str(source), sink=str(sink), chunk_rows=7))
    table = pq.read_table(sink).to_pylist()
    assert [r["request_id"] for r in table] == [f"line-{i + 1}" for i in range(30)]
    assert [r["mean"] for r in table] == [[float(i)] * 2 for i in range(30)]
    assert set(table[3]["quantiles"]) == {"0.1", "0.5", "0.9"}
    assert table[3]["quantiles"]["0.1"] is not None and table[3]["quantiles"]["0.5"] is None
    assert table[1]["quantiles"] is None


def test_graphcast_forecasts_many_initial_times_as_a_job(tmp_path: Path) -> None:
    """A weather job: one row per initial time, each rollout as the backend gives it."""
    from datetime import datetime, timedelta

    import numpy as np

    from sheaf_backend_graphcast.backend import GraphCastBackend
    from sheaf_backend_graphcast.testing import sample_request, save_tiny_graphcast
    from sheaf_core.contracts.arrays import EncodedArray
    from sheaf_core.contracts.weather import WeatherRequest

    kwargs = save_tiny_graphcast(tmp_path / "graphcast")
    first = datetime(2026, 1, 1)
    rows = [sample_request(first + timedelta(hours=6 * i), n_steps=2, seed=i)
            for i in range(6)]
    source = write_jsonl(tmp_path / "init_times.jsonl", rows)
    spec = ModelSpec(name="weather", backend="graphcast", backend_kwargs=kwargs)
    summary = BatchRunner(spec, progress=False).run(BatchSpec(
        source=str(source), sink=str(tmp_path / "forecasts.jsonl"), batch_size=2,
        chunk_rows=2, num_cpus=0.5))
    assert (summary.ok, summary.failed) == (6, 0)
    out = read_jsonl(str(tmp_path / "forecasts.jsonl"))
    assert [o["init_time"] for o in out] == [r["init_time"] for r in rows]
    local = GraphCastBackend(**kwargs)
    local.load()
    for got, row in zip(out, rows, strict=True):
        want = local.predict([WeatherRequest.model_validate(row)])[0]
        for step_got, step_want in zip(got["steps"], want.steps, strict=True):
            np.testing.assert_allclose(
                EncodedArray.model_validate(step_got["atmospheric"]["z"]).to_numpy(),
                step_want.atmospheric["z"].to_numpy(), rtol=1e-5)


def test_auto_chunks_are_about_two_per_worker_and_a_resumed_job_keeps_its_size(
        tmp_path: Path) -> None:
    """`chunk_rows: auto` (the default): few, large chunks — each is a Ray task, and
    scheduling must not dominate a small model's job — bounded both ways; a job resumed
    from checkpoints cuts its chunks as the checkpoints were cut, whatever the cluster."""
    assert auto_chunk_rows(10_000, 2) == 2_500
    assert auto_chunk_rows(100, 8) == 1_024
    assert auto_chunk_rows(10**8, 4) == 65_536
    big = write_jsonl(tmp_path / "big.jsonl", [row(i % 20) for i in range(3000)])
    estimate = Source(str(big)).estimate_rows(sample_bytes=4096)
    assert 2700 <= estimate <= 3300
    bolt = runner()
    job = BatchSpec(source=str(big), sink=str(tmp_path / "big-out.jsonl"), compute="actors",
                    num_actors=1)
    assert bolt._chunk_rows(job, Source(str(big)), WorkDir(job.work_path)) == 1_500
    source = write_jsonl(tmp_path / "in.jsonl", [row(i % 20) for i in range(300)])
    job = BatchSpec(source=str(source), sink=str(tmp_path / "out.jsonl"))
    work = WorkDir(job.work_path)  # checkpoints of a job killed after cutting 100-row chunks
    work.claim({"model": bolt.spec.model_dump(mode="json"),
                "source": Source(str(source)).fingerprint(), "chunk_rows": 100,
                "on_invalid": "fail"})
    assert bolt._chunk_rows(job, Source(str(source)), work) == 100
    summary = bolt.run(job)  # resumes: same identity, so the directory is accepted
    assert summary.ok == 300 and not Path(job.work_path).exists()
