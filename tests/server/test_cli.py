"""The `sheaf-server` executable, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "sheaf-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen[str], port: int, timeout: float) -> str:
    """The server's URL once /ready answers 200; fails with its output if it exits first."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(process.communicate()[0][-3000:])
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def test_serve_a_yaml_file_and_shut_down_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    batching: {max_batch_size: 8, max_wait_ms: 1}\n")
    port = free_port()
    process = subprocess.Popen([str(BIN), "serve", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_ready(process, port, timeout=10)
        response = httpx.post(f"{url}/forecaster/predict",
                              json={"history": [1, 2, 3], "horizon": 2})
        assert response.status_code == 200 and response.json()["mean"] == [3, 3]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "serving forecaster" in output
    assert "Application shutdown complete" in output


def test_sighup_reloads_the_config_and_hot_swaps_changed_models(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    model = "models:\n  - name: forecaster\n    backend: baseline\n"
    config.write_text(model + "    backend_kwargs: {season_length: 1}\n")
    port = free_port()
    process = subprocess.Popen([str(BIN), "serve", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    body = {"history": [1, 2, 3, 4], "horizon": 2}
    try:
        url = wait_ready(process, port, timeout=10)
        assert httpx.post(f"{url}/forecaster/predict", json=body).json()["mean"] == [4, 4]
        config.write_text(model + "    backend_kwargs: {season_length: 2}\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.post(f"{url}/forecaster/predict", json=body).json()["mean"] != [3, 4]:
            assert time.monotonic() < deadline, "the reload never took effect"
            time.sleep(0.05)
        config.write_text(model + "    backend_kwargs: {season_length: 1}\n"
                          "  - name: added\n    backend: baseline\n")
        process.send_signal(signal.SIGHUP)  # refused as a whole: adding a model needs a restart
        time.sleep(0.5)
        assert httpx.post(f"{url}/forecaster/predict", json=body).json()["mean"] == [3, 4]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "not applied, still serving as before" in output and "added: added" in output
    assert "updated forecaster" in output


def test_serve_on_ray_starts_a_local_cluster_and_drains_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    resources: {num_cpus: 0.5}\n")
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
    process = subprocess.Popen([str(BIN), "serve", str(config), "--runtime", "ray",
                                "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_ready(process, port, timeout=120)
        response = httpx.post(f"{url}/forecaster/predict",
                              json={"history": [1, 2, 3], "horizon": 2})
        assert response.status_code == 200 and response.json()["mean"] == [3, 3]
        assert response.headers["x-request-id"] == response.json()["request_id"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert process.returncode == 0, output
    assert "serving forecaster on Ray" in output and "draining" in output


def test_a_bad_config_fails_at_start_naming_model_and_field(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: fc\n    backend: baseline\n"
                      "    backend_kwargs: {season_lenght: 7}\n")
    result = subprocess.run([str(BIN), "serve", str(config), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model 'fc'" in result.stderr and "season_lenght" in result.stderr


def test_openapi_is_written_without_loading_a_model(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: fc\n    backend: chronos\n"
                      "    backend_kwargs: {model_id: /nonexistent/weights}\n")
    out = tmp_path / "openapi.json"
    subprocess.run([str(BIN), "openapi", str(config), "-o", str(out)], check=True, timeout=60)
    document = json.loads(out.read_text())
    assert "/fc/predict" in document["paths"]
    assert "TimeSeriesRequest" in document["components"]["schemas"]


def test_plugins_lists_backends_with_distribution_and_version() -> None:
    result = subprocess.run([str(BIN), "plugins"], capture_output=True, text=True, check=True)
    assert "baseline" in result.stdout and "sheaf-core 0.1.0" in result.stdout
    assert "chronos" in result.stdout and "sheaf-backend-chronos 0.1.0" in result.stdout


def test_validate_checks_pipelines_against_the_models(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: a, backend: baseline}\n"
                      "pipelines:\n  - name: p\n    output: mix\n    nodes:\n"
                      "      a: {model: a}\n      b: {model: b}\n"
                      "      mix: {combiner: weighted_ensemble, inputs: [a, b]}\n")
    result = subprocess.run([str(BIN), "validate", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "pipeline 'p': nodes.b.model: 'b' is not a served model" in result.stderr
    listing = subprocess.run([str(BIN), "plugins"], capture_output=True, text=True, check=True)
    assert "weighted_ensemble" in listing.stdout.split("Combiners:")[1]
