"""What a job worker guarantees, shown with real processes and a real Redis: a worker
killed mid-job, a job that always fails, Redis killed and restarted under load, SIGTERM.
And the store's state changes themselves (claims, duplicate completions, dead letters)
against Redis, as two workers racing would make them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hosts import Host
from job_support import HERE, SCRIPT, start_worker, wait_job, workers, write_config
from redis_support import RedisServer
from server_support import POISON

from sheaf_server.jobs.store import JobStatus, JobStore
from sheaf_server.settings import JobSettings, ServedModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
#: The worker does the same whichever host queued a job; test_jobs.py covers both hosts.
TIER_1 = pytest.mark.parametrize("host", ["asgi"], indirect=True)


def spec(**kwargs: object) -> ServedModelSpec:
    """The scripted model; no warm-up, so its step log counts the jobs' work alone."""
    return ServedModelSpec(name="m", backend="test", backend_kwargs=kwargs, warmup=False)


@TIER_1
def test_a_job_of_a_killed_worker_is_reclaimed_and_finished_once(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    fast = tmp_path / "fast"  # until it exists, a batch takes 60 s: the job is mid-way
    model = spec(delay_s=60, fast_after=str(fast))
    settings = JobSettings(redis_url=redis_server.url, visibility_timeout_s=2)
    config = write_config(tmp_path / "sheaf.yaml", [model], settings)
    with host.serve(model, jobs=settings) as client, workers(config) as (first,):
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        running = wait_job(client, job_id, ("running",))
        with workers(config) as (second,):
            assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
            first.process.kill()
            fast.touch()
            job = wait_job(client, job_id, timeout=60)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 2  # started twice, finished once
            assert job["worker"] != running["worker"]
            assert "reclaimed job" in second.output
            assert job["result"]["mean"] == [4.0, 4.0, 4.0]
            assert redis_server.client().xlen("{sheaf}:jobs:stream:m") == 0


@TIER_1
def test_a_job_that_keeps_failing_goes_to_the_dead_letter_stream_and_others_are_served(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = JobSettings(redis_url=redis_server.url, max_attempts=3, retry_backoff_s=0.05)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    with host.serve(spec(), jobs=settings) as client, workers(config) as (worker,):
        poison = client.post("/m/jobs", json={"history": [1.0, POISON], "horizon": 2})
        good = [client.post("/m/jobs", json=BODY).json()["job_id"] for _ in range(5)]
        failed = wait_job(client, poison.json()["job_id"])
        assert failed["status"] == "failed" and failed["attempts"] == 3
        assert failed["error"]["error"] == "backend_error" and failed["error"]["status"] == 500
        assert "secret internal detail" not in str(failed)
        assert all(wait_job(client, j)["status"] == "succeeded" for j in good)
        dead = redis_server.client().xrange("{sheaf}:jobs:dead")
        assert len(dead) == 1
        entry = {k.decode(): v.decode() for k, v in dead[0][1].items()}
        assert entry["job"] == poison.json()["job_id"] and entry["attempts"] == "3"
        assert "backend_error" in entry["error"]
        assert worker.output.count("trying again") == 2


@TIER_1
def test_redis_killed_and_restarted_under_load_loses_no_accepted_job(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = JobSettings(redis_url=redis_server.url)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def submit(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                reply = client.post("/m/jobs", json=BODY)
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
                if reply.status_code == 202:
                    accepted.append(reply.json()["job_id"])
                else:
                    assert reply.headers.get("retry-after"), reply.text
                    time.sleep(0.05)

    with host.serve(spec(), jobs=settings) as client, workers(config):
        submitters = [threading.Thread(target=submit, args=(str(client.base_url),))
                      for _ in range(4)]
        for thread in submitters:
            thread.start()
        time.sleep(1.0)
        redis_server.stop(kill=True)  # SIGKILL: only what was fsynced survives
        time.sleep(1.5)
        redis_server.start()
        time.sleep(1.5)
        stop.set()
        for thread in submitters:
            thread.join(15)
        assert set(statuses) <= {202, 503}, statuses  # never a 500
        assert statuses.get(503, 0) > 0 and statuses[202] > 20, statuses
        for job_id in accepted:
            assert wait_job(client, job_id, timeout=60)["status"] == "succeeded"


@TIER_1
def test_sigterm_finishes_the_running_job_and_exits_0(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    model = spec(work_steps=15, step_delay_s=0.1)
    settings = JobSettings(redis_url=redis_server.url, drain_timeout_s=30)
    config = write_config(tmp_path / "sheaf.yaml", [model], settings)
    with host.serve(model, jobs=settings) as client:
        worker = start_worker(config)
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        wait_job(client, job_id, ("running",))
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0, worker.output
        assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
        queued = client.post("/m/jobs", json=BODY).json()["job_id"]
        time.sleep(0.5)
        assert client.get(f"/jobs/{queued}").json()["status"] == "queued"  # no more reading
        assert "stopped after 1 jobs" in worker.output


@TIER_1
def test_sigterm_gives_back_a_job_it_cannot_finish_in_time(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    fast = tmp_path / "fast"
    model = spec(delay_s=60, fast_after=str(fast))
    settings = JobSettings(redis_url=redis_server.url, drain_timeout_s=0.5)
    config = write_config(tmp_path / "sheaf.yaml", [model], settings)
    with host.serve(model, jobs=settings, drain_timeout_s=0) as client:
        worker = start_worker(config)
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        wait_job(client, job_id, ("running",))
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0, worker.output
        assert time.monotonic() - started < 10
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "queued" and job["attempts"] == 0  # given back, not counted
        fast.touch()
        with workers(config):
            done = wait_job(client, job_id)
        assert done["status"] == "succeeded" and done["attempts"] == 1


def _store(redis: RedisServer, **settings: object) -> JobStore:
    return JobStore(JobSettings(redis_url=redis.url, **settings))


def test_a_late_duplicate_completion_does_not_overwrite_the_result(
        redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = _store(redis_server, visibility_timeout_s=1)
        job_id = (await store.submit("m", b"{}", media_type="application/json", owner="",
                                     request_id=None)).job_id
        ((model, entry, read_id),) = await store.read(["m"], "w1", 10, 100)
        assert read_id == job_id
        assert (await store.claim(model, entry, job_id, "w1", streams=False)).outcome == "run"
        await asyncio.sleep(1.1)  # w1 stalls past the visibility timeout
        ((_, again, _),) = await store.reclaim("m", "w2", 1000, 10)
        assert again == entry
        claimed = await store.claim(model, entry, job_id, "w2", streams=False)
        assert claimed.job is not None and claimed.job.attempts == 2
        assert await store.complete(model, entry, job_id, JobStatus.SUCCEEDED,
                                    {"result": b'{"by": "w2"}'})
        assert not await store.complete(model, entry, job_id, JobStatus.FAILED,
                                        {"error": '{"by": "w1"}'})
        job = await store.get(job_id)
        assert job.status is JobStatus.SUCCEEDED and job.result == b'{"by": "w2"}'
        assert job.error is None and await store.queued("m") == 0
        await store.close()

    asyncio.run(scenario())


def test_a_job_started_max_attempts_times_without_finishing_is_dead_lettered(
        redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = _store(redis_server, max_attempts=2, visibility_timeout_s=1)
        job_id = (await store.submit("m", b"{}", media_type="application/json", owner="",
                                     request_id=None)).job_id
        ((model, entry, _),) = await store.read(["m"], "w1", 10, 100)
        outcomes = [(await store.claim(model, entry, job_id, f"w{n}", streams=False)).outcome
                    for n in range(3)]  # each worker died before finishing
        assert outcomes == ["run", "run", "dead"]
        job = await store.get(job_id)
        assert job.status is JobStatus.FAILED and job.attempts == 2
        assert job.error is not None and job.error["error"] == "job_abandoned"
        assert len(await store.dead_letters()) == 1 and await store.queued("m") == 0
        await store.close()

    asyncio.run(scenario())


def test_retention_trims_the_index_of_recent_jobs(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = _store(redis_server, retention={"max_len": 3})
        for _ in range(5):
            await store.submit("m", b"{}", media_type="application/json", owner="",
                               request_id=None)
        assert len(await store.recent()) == 3
        assert await store.queued("m") == 5  # the queue itself is never trimmed
        await store.close()

    asyncio.run(scenario())


def test_a_script_sent_again_after_a_lost_reply_does_not_act_twice(
        redis_server: RedisServer) -> None:
    """redis-py sends a command again when the connection drops before the reply: the
    submit must not queue a second job, the completion must know it wrote the result."""
    async def scenario() -> None:
        store = _store(redis_server)
        await store.ensure_group("m")
        args = ["the-job-id-0123456789", repr(time.time()), 100, 60_000, 100, "0", "digest",
                "model", "m", "body", b"{}"]
        keys = [store.keys.stream("m"), store.keys.job("the-job-id-0123456789"),
                store.keys.recent, ""]
        first = await store._submit(keys=keys, args=args)
        again = await store._submit(keys=keys, args=args)
        assert first == again and await store.queued("m") == 1
        ((model, entry, job_id),) = await store.read(["m"], "w1", 10, 100)
        await store.claim(model, entry, job_id, "w1", streams=False)
        done = {"result": b"{}"}
        assert await store.complete(model, entry, job_id, JobStatus.SUCCEEDED, done, run="w1/1")
        assert await store.complete(model, entry, job_id, JobStatus.SUCCEEDED, done, run="w1/1")
        assert not await store.complete(model, entry, job_id, JobStatus.SUCCEEDED, done,
                                        run="w2/2")
        await store.close()

    asyncio.run(scenario())


def test_a_worker_whose_model_fails_to_load_exits_3_naming_it(
        redis_server: RedisServer, tmp_path: Path) -> None:
    settings = JobSettings(redis_url=redis_server.url)
    config = write_config(tmp_path / "sheaf.yaml", [spec(fail_load=True)], settings)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    ran = subprocess.run([sys.executable, str(SCRIPT), str(config)], env=env, text=True,
                         capture_output=True, timeout=120)
    assert ran.returncode == 3, ran.stderr
    assert "models not loaded: m:" in ran.stderr and "weights are corrupt" in ran.stderr


@TIER_1
def test_queued_jobs_of_one_model_run_in_batches(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    """A worker runs up to `jobs.concurrency` jobs at once through the model's batcher, so
    16 waiting jobs take far fewer than 16 backend calls (one step-log line per call). The
    scripted backend streams, so `stream_progress: false` sends its jobs through predict
    (a streamed run takes a batch of its own: progress and cancel, one job at a time)."""
    calls = tmp_path / "calls.log"
    model = spec(work_steps=1, step_delay_s=0.05, step_log=str(calls))
    settings = JobSettings(redis_url=redis_server.url, stream_progress=False)
    config = write_config(tmp_path / "sheaf.yaml", [model], settings)
    with host.serve(model, jobs=settings) as client:
        ids = [client.post("/m/jobs", json=BODY).json()["job_id"] for _ in range(16)]
        with workers(config):
            assert all(wait_job(client, j)["status"] == "succeeded" for j in ids)
        assert len(calls.read_text().split()) <= 4, calls.read_text()


def test_a_delivery_whose_reply_was_lost_is_run_without_waiting_for_the_timeout(
        redis_server: RedisServer) -> None:
    """Redis dies after delivering entries to a worker but before the worker got the reply:
    they are the worker's (pending) though it never saw them. The worker reads its own
    pending entries when it starts and after any Redis trouble, so such a job runs now,
    not after `visibility_timeout_s` (300 s here)."""
    from server_support import ScriptedPlugin

    from sheaf_server.jobs.worker import SheafWorker
    from sheaf_server.settings import SheafConfig

    settings = JobSettings(redis_url=redis_server.url, visibility_timeout_s=300)
    config = SheafConfig(models=[spec()], jobs=settings)

    async def scenario() -> None:
        store = _store(redis_server)
        job_id = (await store.submit("m", json_body(), media_type="application/json",
                                     owner="", request_id=None)).job_id
        assert len(await store.read(["m"], "w1", 10, 100)) == 1  # delivered, reply "lost"
        worker = SheafWorker(config, plugins=[ScriptedPlugin()], name="w1")
        running = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while (await store.get(job_id)).status is not JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.05)
        worker.stop()
        await running
        await store.close()

    asyncio.run(scenario())


def json_body() -> bytes:
    import json

    return json.dumps(BODY).encode()


@TIER_1
def test_one_worker_runs_the_jobs_of_two_models_read_from_both_streams(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    """Two models in one server and one worker: a read covers both streams, each job is
    answered by its own model (the second adds 10 to every forecast)."""
    models = [ServedModelSpec(name="a", backend="test", warmup=False),
              ServedModelSpec(name="b", backend="test", backend_kwargs={"bias": 10.0},
                              warmup=False)]
    settings = JobSettings(redis_url=redis_server.url, concurrency=4)
    config = write_config(tmp_path / "sheaf.yaml", models, settings)
    with host.serve(*models, jobs=settings) as client, workers(config):
        ids = [(name, client.post(f"/{name}/jobs", json=BODY).json()["job_id"])
               for _ in range(6) for name in ("a", "b")]
        for name, job_id in ids:
            job = wait_job(client, job_id)
            assert job["status"] == "succeeded" and job["model"] == name
            assert job["result"]["mean"] == ([4.0] * 3 if name == "a" else [14.0] * 3)
