"""The images `sheaf-server build` describes, built and RUN with podman: the tier-1 image
answers /ready and /baseline/predict from the host as a non-root user and stops cleanly on
SIGTERM; the SageMaker image, started as SageMaker starts it (`docker run IMAGE serve`),
answers /ping and /invocations with a sheaf.yaml mounted at /opt/ml/model.

No image registry is reachable here, so the base is a local Debian bookworm made with
debootstrap (the Dockerfile's BASE_IMAGE argument; users build FROM python:3.11-slim), kept
in podman's store between runs. Needs `apt-get install podman runc debootstrap` (./dev test
does it); `./dev test -m "not container"` leaves these out on a machine without them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import BIN, free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/sheaf-base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The podman command line that works on this host: runc (crun refuses its hybrid
    cgroups), no default ulimits (setrlimit fails), the host network (no bridge here)."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    assert not missing, (f"the container tests need {', '.join(missing)}: apt-get install "
                         "podman runc debootstrap (or run pytest -m 'not container')")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    os.environ["CONTAINERS_CONF"] = str(conf)
    command = ["podman", "--runtime", "runc"]
    if subprocess.run([*command, "image", "exists", BASE]).returncode != 0:
        rootfs = tmp_path_factory.mktemp("rootfs")
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=python3,python3-venv,ca-certificates", "bookworm",
                        str(rootfs)], check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*command, "import", "-", BASE], stdin=tar.stdout, check=True,
                       capture_output=True, timeout=600)
        tar.wait(60)
    return command


def image(podman: list[str], dist: Path, tmp_path: Path, target: str, config: Path) -> str:
    """`sheaf-server build CONFIG --target TARGET --wheels DIST`, then `podman build`."""
    context = tmp_path / target
    ran = subprocess.run([str(BIN), "build", str(config), "--target", target, "-o",
                          str(context), "--wheels", str(dist)], capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    tag = f"localhost/sheaf-test-{target}:{uuid.uuid4().hex[:8]}"
    built = subprocess.run([*podman, "build", "--format", "docker", "--network", "host",
                            "--build-arg", f"BASE_IMAGE={BASE}",
                            "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "-t", tag, str(context)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tag


@pytest.fixture
def running(podman: list[str]) -> Iterator[list[str]]:
    """Names of the containers a test starts; removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run([*podman, "rm", "-f", name], capture_output=True, timeout=120)


def wait_for(url: str, container: str, podman: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            logs = subprocess.run([*podman, "logs", container], capture_output=True,
                                  text=True).stderr
            raise AssertionError(f"{url} never answered 200:\n{logs[-3000:]}")
        time.sleep(0.2)


def test_the_tier_1_image_serves_the_baseline_as_a_non_root_user(
        podman: list[str], dist: Path, tmp_path: Path, running: list[str]) -> None:
    tag = image(podman, dist, tmp_path, "docker", ROOT / "deploy" / "sheaf.yaml")
    port, name = free_port(), f"sheaf-test-{uuid.uuid4().hex[:8]}"
    running.append(name)
    subprocess.run([*podman, "run", "-d", "--name", name, "--network", "host",
                    "-e", f"PORT={port}", tag], check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/ready", name, podman)
    answer = httpx.post(f"{url}/baseline/predict", json={"history": [1, 2, 3], "horizon": 2})
    assert answer.status_code == 200 and answer.json()["mean"] == [3, 3], answer.text
    user = subprocess.run([*podman, "exec", name, "id", "-u"], capture_output=True,
                          text=True, timeout=60)
    assert user.stdout.strip() == "10001"
    health = subprocess.run([*podman, "healthcheck", "run", name], capture_output=True,
                            text=True, timeout=60)
    assert health.returncode == 0, health.stdout + health.stderr
    subprocess.run([*podman, "stop", "-t", "30", name], check=True, capture_output=True,
                   timeout=120)
    state = subprocess.run([*podman, "inspect", name, "--format", "{{.State.ExitCode}}"],
                           capture_output=True, text=True, timeout=60)
    assert state.stdout.strip() == "0"  # SIGTERM drained and exited cleanly


def test_the_sagemaker_image_runs_as_sagemaker_runs_it(
        podman: list[str], dist: Path, tmp_path: Path, running: list[str]) -> None:
    tag = image(podman, dist, tmp_path, "sagemaker", ROOT / "deploy" / "sheaf.yaml")
    model = tmp_path / "model"
    model.mkdir()
    (model / "sheaf.yaml").write_text("models:\n  - name: forecaster\n    backend: baseline\n"
                                      "    backend_kwargs: {season_length: 1}\n")
    port, name = free_port(), f"sheaf-test-{uuid.uuid4().hex[:8]}"
    running.append(name)
    subprocess.run([*podman, "run", "-d", "--name", name, "--network", "host",
                    "-v", f"{model}:/opt/ml/model:ro",
                    "-e", f"SAGEMAKER_BIND_TO_PORT={port}", tag, "serve"],
                   check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/ping", name, podman)
    answer = httpx.post(f"{url}/invocations", content=json.dumps(
        {"history": [1, 2, 3], "horizon": 2}), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == "forecaster"  # the mounted config, not the baked
    assert answer.json()["mean"] == [3, 3]
