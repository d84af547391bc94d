"""What a user installs is what CI runs: the wheels `./dev wheels` builds from this checkout,
installed into fresh virtual environments that hold nothing else (never the editable
development tree), and each host started from there — tier 1 on the baseline and a tiny
Chronos-Bolt, `--runtime ray`, and `sheaf-batch run`. A dependency a package forgot to
declare, or a file its wheel forgot to ship, fails here the way it would fail for a user.

The installs use the README's lines, with the development pins as constraints (`-c`) so that
CI does not change under us when a dependency releases; constraints only bound versions and
never add a package, so they hide nothing missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import free_port, served

from sheaf_backend_chronos.testing import save_tiny_bolt

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints" / "dev.txt"


@pytest.fixture
def venv_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's fresh venv goes; removed afterwards (torch makes one ~5 GB)."""
    yield tmp_path / "venv"
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)


def fresh_venv(path: Path, dist: Path, *requirements: str) -> Path:
    """A new venv with only `requirements` installed from `dist` (and their dependencies
    from the package index); its bin directory. `pip check` must pass in it."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    pip = [str(path / "bin" / "python"), "-m", "pip"]
    ran = subprocess.run([*pip, "install", "-q", "--find-links", str(dist),
                          "-c", str(CONSTRAINTS), *requirements],
                         capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout
    return path / "bin"


@pytest.fixture
def ray_env() -> Iterator[dict[str, str]]:
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    yield {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_dev_wheels_builds_every_package_and_twine_accepts_them(dist: Path) -> None:
    """`./dev wheels` (the `dist` fixture) printed twine's PASSED for each file and the
    install line; each wheel carries the license and the typing marker."""
    import zipfile

    for wheel in dist.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        assert any(n.endswith("licenses/LICENSE") for n in names), wheel.name
        assert any(n.endswith("/py.typed") for n in names), wheel.name


def test_the_readme_install_serves_the_baseline_and_a_chronos_model(
        dist: Path, tmp_path: Path, venv_dir: Path) -> None:
    """`pip install sheaf-core sheaf-server sheaf-backend-chronos`, then `sheaf-server serve`
    with the embedded baseline and a Chronos-Bolt from a local directory."""
    bin_dir = fresh_venv(venv_dir, dist,
                         "sheaf-core", "sheaf-server", "sheaf-backend-chronos")
    version = subprocess.run([str(bin_dir / "sheaf-server"), "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "sheaf-backend-chronos 0.1.0" in version.stdout, \
        version.stdout + version.stderr
    bolt = save_tiny_bolt(tmp_path / "bolt")
    config = tmp_path / "sheaf.yaml"
    config.write_text(json.dumps({"models": [  # JSON is YAML
        {"name": "baseline", "backend": "baseline"},
        {"name": "forecaster", "backend": "chronos", "backend_kwargs": {"model_id": str(bolt)}},
    ]}))
    body = {"history": [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7], "horizon": 7,
            "output_mode": "quantiles", "quantile_levels": [0.1, 0.5, 0.9]}
    with served(config, executable=bin_dir / "sheaf-server", timeout=120) as server:
        for name in ("baseline", "forecaster"):
            answer = httpx.post(f"{server.url}/{name}/predict", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["mean"]) == 7
            assert len(answer.json()["quantiles"]) == 3
    assert server.process.returncode == 0, server.output


def test_sheaf_server_ray_alone_serves_on_ray(dist: Path, tmp_path: Path, venv_dir: Path,
                                              ray_env: dict[str, str]) -> None:
    """`pip install 'sheaf-server[ray]'` and nothing else is enough for `--runtime ray`
    (it once lacked httpx)."""
    bin_dir = fresh_venv(venv_dir, dist, "sheaf-server[ray]")
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    resources: {num_cpus: 0.5}\n")
    with served(config, "--runtime", "ray", env=ray_env, timeout=180,
                executable=bin_dir / "sheaf-server") as server:
        answer = httpx.post(f"{server.url}/forecaster/predict",
                            json={"history": [1, 2, 3], "horizon": 2}, timeout=30)
        assert answer.status_code == 200 and answer.json()["mean"] == [3, 3], answer.text
    assert server.process.returncode == 0, server.output


def test_sheaf_batch_alone_runs_a_job(dist: Path, tmp_path: Path, venv_dir: Path,
                                      ray_env: dict[str, str]) -> None:
    """`pip install sheaf-batch` and nothing else runs `sheaf-batch run job.yaml`."""
    bin_dir = fresh_venv(venv_dir, dist, "sheaf-batch")
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"history": [1, 2, float(i)], "horizon": 1}) + "\n"
                              for i in range(20)))
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"model": {"name": "fc", "backend": "baseline",
                                         "backend_kwargs": {"season_length": 1}},
                               "job": {"source": str(source), "sink": str(sink)}}))
    ran = subprocess.run([str(bin_dir / "sheaf-batch"), "run", str(job), "--no-progress"],
                         env=ray_env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "20 rows: 20 ok" in ran.stderr
    rows = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [row["mean"] for row in rows] == [[float(i)] for i in range(20)]
