"""The executables an operator runs: `sheaf-server worker CONFIG` beside `sheaf-server
serve CONFIG`, and `sheaf-server jobs submit|status|list|cancel` against the server —
real processes, a real Redis, the embedded baseline backend."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

from cli_support import BIN, served
from job_support import Worker
from redis_support import RedisServer


def sheaf(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_serve_and_worker_executables_answer_jobs_the_cli_submits(
        redis_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n"
                      f"jobs:\n  redis_url: {redis_server.url}\n")
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}))
    process = subprocess.Popen([str(BIN), "worker", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    worker = Worker(process)
    threading.Thread(target=worker.read, daemon=True).start()
    try:
        worker.wait_for("running jobs of baseline", 60)
        with served(config) as server:
            url = ("--url", server.url)
            waited = sheaf("jobs", *url, "submit", "baseline", str(body), "--wait")
            assert waited.returncode == 0, waited.stderr
            assert json.loads(waited.stdout)["model_name"] == "baseline"
            submitted = sheaf("jobs", *url, "submit", "baseline", "-", stdin=body.read_text())
            job_id = submitted.stdout.strip()
            assert submitted.returncode == 0 and len(job_id) >= 32, submitted.stderr
            status = sheaf("jobs", *url, "status", job_id)
            assert json.loads(status.stdout)["job_id"] == job_id
            listed = sheaf("jobs", *url, "list", "--model", "baseline")
            assert listed.returncode == 0 and job_id in listed.stdout
            late = sheaf("jobs", *url, "cancel", job_id)
            if "cancelled" not in late.stdout:  # the worker was faster: finished
                assert late.returncode == 1 and "409 job_conflict" in late.stderr
            bad = tmp_path / "bad.json"
            bad.write_text('{"history": [], "horizon": 3}')
            refused = sheaf("jobs", *url, "submit", "baseline", str(bad))
            assert refused.returncode == 1 and "422" in refused.stderr
            assert "history" in refused.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, worker.output
        assert "stopped after" in worker.output
    finally:
        if process.poll() is None:
            process.kill()


def test_a_worker_without_a_jobs_section_says_what_to_add(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    ran = sheaf("worker", str(config))
    assert ran.returncode == 2
    assert "no `jobs:` section" in ran.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("models:\n  - {name: baseline, backend: baseline}\n"
                       "jobs:\n  models: [nope]\n")
    ran = sheaf("worker", str(unknown))
    assert ran.returncode == 2 and "jobs.models names 'nope'" in ran.stderr
