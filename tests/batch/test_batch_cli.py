"""`sheaf-batch run job.yaml` as a user runs it: a job file reusing the ModelSpec schema, a
summary at the end, clear exit codes — and a job killed midway (the whole process group,
its local Ray cluster included) that, started again, finishes from its checkpoints with
complete output in order and no duplicates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "sheaf-batch"


@pytest.fixture
def env() -> dict[str, str]:
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    yield {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def job_file(tmp_path: Path, rows: int, **job: object) -> tuple[Path, Path]:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"history": [1, 2, float(i)], "horizon": 1}) + "\n"
                              for i in range(rows)))
    sink = tmp_path / "out.jsonl"
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "model": {"name": "fc", "backend": "baseline", "backend_kwargs": {"season_length": 1}},
        "job": {"source": str(source), "sink": str(sink), **job}}))
    return path, sink


def test_a_job_file_runs_and_prints_a_summary(tmp_path: Path, env: dict[str, str]) -> None:
    path, sink = job_file(tmp_path, 50, batch_size=16)
    result = subprocess.run([str(BIN), "run", str(path), "--no-progress"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "50 rows: 50 ok" in result.stderr and "0 failed" in result.stderr
    assert len(sink.read_text().splitlines()) == 50


def test_a_bad_job_file_names_the_field(tmp_path: Path) -> None:
    path, _ = job_file(tmp_path, 1, batch_sise=16)
    result = subprocess.run([str(BIN), "run", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "job.batch_sise: Extra inputs" in result.stderr


def test_a_killed_job_resumes_from_its_checkpoints(tmp_path: Path, env: dict[str, str]) -> None:
    rows = 3000
    path, sink = job_file(tmp_path, rows, chunk_rows=30, batch_size=10)  # 100 chunks
    parts = Path(f"{sink}.parts")
    first = subprocess.Popen([str(BIN), "run", str(path), "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("*.done"))) < 5:
        assert first.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no chunk finished in time"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the cluster it started
    first.wait(30)
    done_before = len(list(parts.glob("*.done")))
    assert 0 < done_before < 100 and not sink.exists()

    second = subprocess.run([str(BIN), "run", str(path), "--no-progress"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "chunks from checkpoints" in second.stderr
    ids = [json.loads(line)["request_id"] for line in sink.read_text().splitlines()]
    assert ids == [f"line-{i + 1}" for i in range(rows)]  # complete, in order, no duplicate
    assert not parts.exists()


def _driver_peak_rss_kib(path: Path, env: dict[str, str]) -> int:
    """Peak RSS of the driver process alone (Ray's workers are other processes)."""
    code = ("import resource, sys; from sheaf_batch.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "run", str(path), "--no-progress"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stderr.rsplit("MAXRSS", 1)[1].split()[0])


def test_the_driver_holds_no_more_for_100k_rows_than_for_1k(tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small, _ = job_file(tmp_path / "small", 1_000)
    large, sink = job_file(tmp_path / "large", 100_000)
    growth_mib = (_driver_peak_rss_kib(large, env) - _driver_peak_rss_kib(small, env)) / 1024
    assert len(sink.read_text().splitlines()) == 100_000
    # 100k requests and responses held at once would be hundreds of MiB of Python objects
    assert growth_mib < 64, f"driver peak RSS grew {growth_mib:.0f} MiB for 99k more rows"


def test_a_job_takes_its_batch_size_and_resources_from_the_model_unless_it_sets_them() -> None:
    from sheaf_batch.spec import BatchSpec
    from sheaf_core import ModelSpec

    model = ModelSpec(name="fc", backend="baseline", batching={"max_batch_size": 8},
                      resources={"num_cpus": 0.5, "num_gpus": 1})
    job = BatchSpec(source="in.jsonl", sink="out.jsonl")
    assert job.for_model(model).model_dump(include={"batch_size", "num_cpus", "num_gpus"}) == {
        "batch_size": 8, "num_cpus": 0.5, "num_gpus": 1}
    own = BatchSpec(source="in.jsonl", sink="out.jsonl", batch_size=64, num_gpus=0)
    assert (own.for_model(model).batch_size, own.for_model(model).num_gpus) == (64, 0)


def test_a_job_file_with_ray_serve_settings_says_what_applies_instead(tmp_path: Path) -> None:
    path, _ = job_file(tmp_path, 1)
    data = json.loads(path.read_text())
    data["model"]["ray"] = {"num_replicas": 2}
    path.write_text(json.dumps(data))
    result = subprocess.run([str(BIN), "run", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "model.ray: Ray Serve deployment settings" in result.stderr
    assert "job.num_cpus" in result.stderr
