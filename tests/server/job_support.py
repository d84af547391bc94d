"""Job workers as real processes (`job_worker.py`, i.e. `run_worker` — what `sheaf-server
worker` runs — with the scripted test backend), their configs, and waiting on jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from cli_support import Served

from sheaf_core.pipeline_spec import PipelineSpec
from sheaf_core.spec import ModelSpec
from sheaf_server.settings import JobSettings, SheafConfig

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "job_worker.py"
FINISHED = ("succeeded", "failed", "cancelled")


def write_config(path: Path, specs: Sequence[ModelSpec], jobs: JobSettings,
                 pipelines: Sequence[PipelineSpec] = (), **server: Any) -> Path:
    config = SheafConfig(models=list(specs), jobs=jobs, pipelines=list(pipelines),
                         server=server)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


class Worker(Served):
    """A worker process and its output so far (`Served`'s reader and waits)."""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_worker(config: Path) -> Worker:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = Worker(process)
    threading.Thread(target=worker.read, daemon=True).start()
    worker.wait_for("running jobs of", 60)
    return worker


@contextmanager
def workers(config: Path, count: int = 1) -> Iterator[list[Worker]]:
    """`count` worker processes, each once it reads jobs; SIGKILLed if still running after
    the block (a test that stops them itself checks how they exit)."""
    running = [start_worker(config) for _ in range(count)]
    try:
        yield running
    finally:
        for worker in running:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=30)


def wait_job(client: httpx.Client, job_id: str, statuses: Sequence[str] = FINISHED,
             timeout: float = 60, **headers: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/jobs/{job_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        job: dict[str, Any] = reply.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.05)
