"""A config's mistakes, as `sheaf-server` reports them: all at once, each naming the model
and the setting, with the nearest valid name — and a model that cannot load stops a
server that has nothing else to serve, so that an orchestrator sees it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from cli_support import BIN, free_port, served

from sheaf_backend_chronos.testing import save_tiny_bolt


def validate(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "validate", str(config), *options], capture_output=True,
                          text=True, timeout=60)


def test_validate_reports_every_problem_of_every_model_in_one_run(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("""\
models:
  - name: typo
    backend: chronoss
  - name: kwargs
    backend: chronos
    backend_kwargs: {model_id: amazon/chronos-bolt-tiny, devicee: cpu}
  - name: missing
    backend: chronos
    backend_kwargs: {model_id: /no/such/weights}
  - name: policy
    backend: baseline
    batching: {max_wiat_ms: 3}
server: {prot: 8000}
""")
    ran = validate(config)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    err = ran.stderr
    assert f"{config} has 5 problems" in err, err
    assert "models[3] 'policy': batching.max_wiat_ms: unknown setting; did you mean " \
        "'max_wait_ms'?" in err
    assert "server.prot: unknown setting; did you mean 'port'?" in err
    assert "model 'typo': backend: unknown backend 'chronoss'. Did you mean 'chronos'?" in err
    assert "pip install sheaf-backend-chronoss" not in err  # never a package built from a typo
    assert "backend_kwargs.devicee: unknown setting; did you mean 'device'?" in err
    assert "model 'missing': backend_kwargs.model_id: /no/such/weights is neither a local " \
        "directory nor a hub id" in err
    assert "docs/" not in err  # a pip user has no repository paths


def test_validate_skip_files_leaves_paths_to_the_machine_that_loads(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: fc\n    backend: chronos\n"
                      "    backend_kwargs: {model_id: /cluster/only/weights}\n")
    assert validate(config).returncode == 2
    ran = validate(config, "--skip-files")
    assert ran.returncode == 0 and "ok (1 models)" in ran.stdout, ran.stderr


def test_a_backend_sheaf_publishes_but_not_installed_names_its_package(tmp_path: Path) -> None:
    from sheaf_core.registry import unknown_backend_message

    message = unknown_backend_message("flux", ["baseline", "chronos"], [])
    assert "`pip install sheaf-backend-flux`" in message
    assert "pip install" not in unknown_backend_message("nope", ["baseline"], [])


def test_bad_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: a\n    backend: [baseline\n")
    ran = validate(config)
    assert ran.returncode == 2 and "<unicode string>" not in ran.stderr
    assert f"{config}, line 4, column 1: not valid YAML" in ran.stderr, ran.stderr


def test_a_missing_weights_path_fails_the_start_before_anything_binds(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: chronos\n"
                      "    backend_kwargs: {model_id: /x/y}\n")
    ran = subprocess.run([str(BIN), "serve", str(config), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert "model 'forecaster': backend_kwargs.model_id: /x/y is neither a local directory " \
        "nor a hub id" in ran.stderr
    assert "Repo id must" not in ran.stderr  # the hub's complaint about an id's format


def broken_weights(tmp_path: Path) -> Path:
    """A Chronos-Bolt directory whose weights file is not safetensors: it exists (so the
    start-up check passes) and fails in the library's own load."""
    bolt = save_tiny_bolt(tmp_path / "bolt")
    for weights in bolt.glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    return bolt


def test_one_model_that_fails_to_load_exits_the_server_with_status_3(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: forecaster\n    backend: chronos\n"
                      f"    backend_kwargs: {{model_id: {broken_weights(tmp_path)}}}\n")
    ran = subprocess.run([str(BIN), "serve", str(config), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 3, ran.stderr[-3000:]
    assert "model 'forecaster' failed (load failed: " in ran.stderr
    assert "server.exit_on_load_failure" in ran.stderr


def test_with_several_models_a_failed_one_is_reported_and_the_others_serve(
        tmp_path: Path) -> None:
    """exit_on_load_failure is off by default with several models: /ready names the failed
    one, which answers 503 model_failed without Retry-After (waiting will not heal it)."""
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: good\n    backend: baseline\n"
                      "  - name: broken\n    backend: chronos\n"
                      f"    backend_kwargs: {{model_id: {broken_weights(tmp_path)}}}\n"
                      "server: {ready_when: any}\n")
    with served(config, timeout=60) as server:
        body = {"history": [1, 2, 3], "horizon": 2}
        assert httpx.post(f"{server.url}/good/predict", json=body).status_code == 200
        answer = httpx.post(f"{server.url}/broken/predict", json=body)
        assert answer.status_code == 503 and answer.json()["error"] == "model_failed"
        assert "retry-after" not in answer.headers
        assert server.process.poll() is None
    assert server.process.returncode == 0, server.output


def test_exit_on_load_failure_can_be_turned_on_for_several_models(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - name: good\n    backend: baseline\n"
                      "  - name: broken\n    backend: chronos\n"
                      f"    backend_kwargs: {{model_id: {broken_weights(tmp_path)}}}\n"
                      "server: {exit_on_load_failure: true}\n")
    ran = subprocess.run([str(BIN), "serve", str(config), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 3 and "model 'broken' failed" in ran.stderr, ran.stderr[-3000:]


def test_sagemaker_variables_apply_where_they_can(tmp_path: Path) -> None:
    """--sagemaker: SAGEMAKER_MODEL_SERVER_TIMEOUT is the request deadline; the workers
    variable is not applied (one process) and the log says so."""
    import os

    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: fc, backend: baseline}\n")
    env = {**os.environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT": "7",
           "SAGEMAKER_MODEL_SERVER_WORKERS": "4"}
    with served(config, "--sagemaker", env=env) as server:
        assert httpx.get(f"{server.url}/ping").status_code == 200
        assert httpx.get(f"{server.url}/models/fc").json()["timeout_s"] == 7
    assert "SAGEMAKER_MODEL_SERVER_WORKERS=4 is not applied" in server.output
