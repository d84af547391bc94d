"""A model replica killed (SIGKILL) mid-request on Ray: every request in flight is answered
— an error body with its request id, or the answer — within its deadline, none hangs, and
once Serve has replaced the replica the model answers again. The figures under load (and
the ingress replica's) are bench/ray_faults.py's; this is the part that is deterministic."""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest
from hosts import Host

from sheaf_server.settings import ServedModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
DEADLINE_S = 20.0


def replica_process(title: str) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        if any(title in part for part in process.info["cmdline"] or []):
            return process
    raise AssertionError(f"no process titled {title!r}")


def test_a_killed_model_replica_answers_what_it_held_and_comes_back(
        request: pytest.FixtureRequest) -> None:
    slow = ServedModelSpec(name="m", backend="test", resources={"num_cpus": 0.5},
                           timeout_s=DEADLINE_S, backend_kwargs={"delay_s": 1.0})
    answers: list[tuple[int, str, float]] = []
    with Host("ray", request).serve(slow) as client:
        base = str(client.base_url)

        def post(number: int) -> None:
            started = time.monotonic()
            reply = httpx.post(f"{base}/m/predict", json=BODY, timeout=DEADLINE_S + 15,
                               headers={"x-request-id": f"held-{number}"})
            answers.append((reply.status_code, reply.json().get("request_id", ""),
                            time.monotonic() - started))

        posts = [threading.Thread(target=post, args=(n,)) for n in range(4)]
        for thread in posts:
            thread.start()
        time.sleep(0.5)  # in the replica: its batch sleeps for a second
        replica_process("ServeReplica:sheaf:m").kill()
        for thread in posts:
            thread.join(DEADLINE_S + 20)
        deadline = time.monotonic() + 120
        while (again := client.post("/m/predict", json=BODY)).status_code != 200:
            assert again.status_code == 503 and again.json()["request_id"], again.text
            assert time.monotonic() < deadline, "the model never came back"
            time.sleep(0.5)
    assert len(answers) == 4, answers
    for status, request_id, seconds in answers:
        assert status in (200, 500, 503) and request_id.startswith("held-"), answers
        assert seconds < DEADLINE_S + 5, answers
