"""The `sheaf-server` executable, run as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from cli_support import BIN, SERVING, Served, free_port, reserved_port, served

from sheaf_server.ray import reaper


def test_serve_a_yaml_file_and_shut_down_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    batching: {max_batch_size: 8, max_wait_ms: 1}\n")
    with served(config) as server:
        response = httpx.post(f"{server.url}/forecaster/predict",
                              json={"history": [1, 2, 3], "horizon": 2})
        assert response.status_code == 200 and response.json()["mean"] == [3, 3]
    assert server.process.returncode == 0, server.output
    assert "serving forecaster" in server.output
    assert "Application shutdown complete" in server.output


def test_json_logs_carry_an_access_record_per_request_with_its_fields(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "server: {log_format: json, access_log: true}\n")
    with served(config) as server:
        httpx.post(f"{server.url}/forecaster/predict",
                   json={"history": [1, 2, 3], "horizon": 2}, headers={"x-request-id": "log-1"})
        httpx.post(f"{server.url}/forecaster/predict", json={"horizon": 0})
    output = server.output  # stdout and stderr: every line a JSON record
    records = [json.loads(line) for line in output.strip().splitlines()]
    access = [r for r in records if r["logger"] == "sheaf.access" and r["route"] == "predict"]
    assert [(r["status"], r["model"], r["method"]) for r in access] == [
        (200, "forecaster", "POST"), (422, "forecaster", "POST")]
    assert access[0]["request_id"] == "log-1" and access[0]["latency_ms"] > 0
    assert access[1]["request_id"]  # generated
    assert {"time", "level", "logger", "message"} <= set(access[0])
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines too


def test_sighup_reloads_the_config_and_hot_swaps_changed_models(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    model = "models:\n  - name: forecaster\n    backend: baseline\n"
    config.write_text(model + "    backend_kwargs: {season_length: 1}\n")
    body = {"history": [1, 2, 3, 4], "horizon": 2}
    with served(config) as server:
        url, process = server.url, server.process
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
    output = server.output
    assert process.returncode == 0, output
    assert "not applied, still serving as before" in output and "added: added" in output
    assert "updated forecaster" in output


def test_serve_on_ray_starts_a_local_cluster_and_drains_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    resources: {num_cpus: 0.5}\n")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
    try:
        with served(config, "--runtime", "ray", env=env, timeout=120) as server:
            response = httpx.post(f"{server.url}/forecaster/predict",
                                  json={"history": [1, 2, 3], "horizon": 2})
            assert response.status_code == 200 and response.json()["mean"] == [3, 3]
            assert response.headers["x-request-id"] == response.json()["request_id"]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert server.process.returncode == 0, server.output
    assert "serving forecaster on Ray" in server.output and "draining" in server.output


def test_a_stop_signal_while_starting_on_ray_abandons_the_start_and_cleans_up(
        tmp_path: Path) -> None:
    """SIGTERM after Ray is up but before the app answers (Ray installs its own fatal
    SIGTERM handler in ray.init; the CLI's must still be the one that runs)."""
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    resources: {num_cpus: 0.5}\n")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
    process = subprocess.Popen([str(BIN), "serve", str(config), "--runtime", "ray",
                                "--port", str(free_port())], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    running = Served(process)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        running.wait_for("Started Serve", timeout=120)  # ray.init has returned by then
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(10)
    finally:
        process.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert process.returncode == 0, running.output
    assert "stopped while starting" in running.output
    assert "SIGTERM received" not in running.output  # Ray's abort handler did not run


def test_a_ray_host_leaves_no_process_behind_when_stopped_or_killed(tmp_path: Path) -> None:
    """By PID: every process of the cluster `serve --runtime ray` started — Ray's HAProxy
    included, which once outlived it holding its ports — is gone after a SIGTERM (which
    also stops within the drain timeout plus Ray's shutdown) and after a SIGKILL (the
    reaper beside the host cleans up)."""
    import psutil

    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                      "    resources: {num_cpus: 0.5}\nserver: {drain_timeout_s: 5}\n")
    for stop in (signal.SIGTERM, signal.SIGKILL):
        ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled",
               "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
               "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
        port = reserved_port()  # not from the ephemeral range: checked free again below
        process = subprocess.Popen([str(BIN), "serve", str(config), "--runtime", "ray",
                                    "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        running = Served(process)
        reader = threading.Thread(target=running.read, daemon=True)
        reader.start()
        try:
            running.wait_for(SERVING, timeout=120)
            host = psutil.Process(process.pid)
            cluster: dict[int, psutil.Process] = {}
            names: set[str] = set()
            for _ in range(20):  # a while: HAProxy restarts itself once the app deploys
                with contextlib.suppress(psutil.Error):  # a child exiting as we look
                    for child in host.children(recursive=True):
                        cluster[child.pid] = child
                        names.add(child.name())
                time.sleep(0.2)
            assert "haproxy" in names, running.output
            process.send_signal(stop)
            process.wait(timeout=5 + 60)  # drain timeout, then Ray's own shutdown
            deadline = time.monotonic() + 60
            while left := [p for p in cluster.values() if reaper.alive(p)]:
                assert time.monotonic() < deadline, (stop, [p.pid for p in left])
                time.sleep(0.2)
            with socket.socket() as sock:  # nothing listens on its port any more
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
                sock.bind(("127.0.0.1", port))
        finally:
            process.kill()
            reader.join(10)
            shutil.rmtree(ray_tmp, ignore_errors=True)
        if stop == signal.SIGTERM:
            assert process.returncode == 0, running.output


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


def test_version_lists_every_installed_sheaf_package_and_plugin() -> None:
    for program, own in (("sheaf-server", "sheaf-server"), ("sheaf-batch", "sheaf-batch")):
        ran = subprocess.run([str(BIN.parent / program), "--version"], capture_output=True,
                             text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        first, *rest = ran.stdout.splitlines()
        assert first.split()[0] == own and first.split()[1][0].isdigit()
        listed = {line.split()[0] for line in rest}
        assert {"sheaf-core", "sheaf-server", "sheaf-batch", "sheaf-backend-chronos",
                "sheaf-backend-flux"} <= listed


def test_a_bad_log_level_is_a_usage_error_listing_the_choices() -> None:
    ran = subprocess.run([str(BIN), "serve", "--log-level", "bogus"], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert "invalid choice: 'bogus'" in ran.stderr and "debug" in ran.stderr


def test_with_json_logs_every_stderr_line_is_json_through_load_reload_and_drain(
        tmp_path: Path) -> None:
    """A transformers-based model (Chronos-Bolt: transformers draws a "Loading weights"
    bar), a hot swap by SIGHUP, probes, a drain: every line the process writes parses as
    JSON, uvicorn's color_message is gone, and the probes are not in the access log."""
    from sheaf_backend_chronos.testing import save_tiny_bolt

    first, second = save_tiny_bolt(tmp_path / "v1"), save_tiny_bolt(tmp_path / "v2", seed=1)
    config = tmp_path / "sheaf.yaml"

    def write(weights: Path) -> None:
        config.write_text("models:\n  - name: forecaster\n    backend: chronos\n"
                          f"    backend_kwargs: {{model_id: {weights}}}\n"
                          "server: {log_format: json, access_log: true}\n")

    write(first)
    body = {"history": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "horizon": 3}
    with served(config, timeout=60) as server:
        before = httpx.post(f"{server.url}/forecaster/predict", json=body).json()["mean"]
        write(second)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("reloaded", timeout=60)
        after = httpx.post(f"{server.url}/forecaster/predict", json=body).json()["mean"]
        assert after != before  # other weights answer
        for probe in ("/health", "/ready", "/forecaster/ready"):
            assert httpx.get(f"{server.url}{probe}").status_code == 200
    assert server.process.returncode == 0
    lines = server.output.strip().splitlines()
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert not any("color_message" in r for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("serving forecaster at") for m in messages)
    assert any(m.startswith("reloaded") for m in messages) and "draining" in messages
    paths = [r["path"] for r in records if r["logger"] == "sheaf.access"]
    assert paths == ["/forecaster/predict", "/forecaster/predict"]  # probes left out
