"""Asynchronous jobs over HTTP, on both hosts (tier 1 and Ray): `POST /{name}/jobs` checks
a body as /predict does and queues it on a real Redis; a real worker process (`run_worker`,
what `sheaf-server worker` runs) answers it; `GET /jobs/{id}` gives status and result,
`DELETE` cancels, `GET /jobs` lists. The failure guarantees with processes killed and
Redis restarted are in test_job_worker.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from hosts import Host
from job_support import wait_job, workers, write_config
from redis_support import RedisServer

from sheaf_core.pipeline_spec import PipelineSpec
from sheaf_server.settings import JobSettings, ServedModelSpec

#: What only the worker or the store does, the same whichever host queued the job.
TIER_1 = pytest.mark.parametrize("host", ["asgi"], indirect=True)
BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}


def spec(name: str = "m", **kwargs: object) -> ServedModelSpec:
    return ServedModelSpec(name=name, backend="test", **kwargs)


def jobs(redis: RedisServer, **settings: object) -> JobSettings:
    return JobSettings(redis_url=redis.url, **settings)


def queue_length(redis: RedisServer, model: str = "m") -> int:
    return int(redis.client().xlen(f"{{sheaf}}:jobs:stream:{model}"))


def test_a_job_is_checked_queued_run_by_a_worker_and_collected(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = jobs(redis_server)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    with host.serve(spec(), jobs=settings) as client, workers(config):
        submitted = client.post("/m/jobs", json=BODY, headers={"X-Request-ID": "job-req-1"})
        assert submitted.status_code == 202, submitted.text
        body = submitted.json()
        job_id = body["job_id"]
        assert len(job_id) >= 32  # 192 random bits, URL-safe
        assert submitted.headers["location"] == body["status_url"] == f"/jobs/{job_id}"
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1 and job["model"] == "m"
        assert job["created_at"] <= job["started_at"] <= job["finished_at"]
        answer = client.post("/m/predict", json=BODY).json()
        assert job["result"]["mean"] == answer["mean"]
        assert job["result"]["request_id"] == job["request_id"] == "job-req-1"
        assert job["result"]["model_name"] == "m" and job["error"] is None
        raw = client.get(f"/jobs/{job_id}/result")
        assert raw.status_code == 200 and json.loads(raw.content) == job["result"]
        listed = client.get("/jobs", params={"model": "m", "status": "succeeded"}).json()
        assert [j["job_id"] for j in listed["jobs"]] == [job_id]
        assert client.get("/jobs", params={"status": "failed"}).json()["jobs"] == []
        routes = client.get("/models/m").json()["routes"]
        assert routes["jobs"] == "/m/jobs"
        assert queue_length(redis_server) == 0  # acknowledged entries leave the stream


def test_a_bad_body_is_a_422_now_and_nothing_is_queued(
        host: Host, redis_server: RedisServer) -> None:
    with host.serve(spec(), jobs=jobs(redis_server), max_body_bytes=4096) as client:
        large = client.post("/m/jobs", json={"history": [1.0] * 2000, "horizon": 3})
        assert large.status_code == 413  # the body limit of /predict
        refused = client.post("/m/jobs", json={"history": [1.0, "x"], "horizon": 0})
        assert refused.status_code == 422
        fields = {d["field"] for d in refused.json()["details"]}
        assert {"history.1", "horizon"} <= fields
        too_much = client.post("/m/jobs", json={**BODY, "horizon": 100_000})
        assert too_much.status_code == 422  # the model's limits, as /predict
        assert client.post("/nope/jobs", json=BODY).status_code == 404
        assert queue_length(redis_server) == 0
        assert client.get("/jobs").json()["jobs"] == []


def test_an_idempotency_key_answers_a_retried_submit_with_the_first_job(
        host: Host, redis_server: RedisServer) -> None:
    with host.serve(spec(), jobs=jobs(redis_server)) as client:
        first = client.post("/m/jobs", json=BODY, headers={"Idempotency-Key": "order-7"})
        again = client.post("/m/jobs", json=BODY, headers={"Idempotency-Key": "order-7"})
        other = client.post("/m/jobs", json=BODY, headers={"Idempotency-Key": "order-8"})
        assert first.status_code == again.status_code == other.status_code == 202
        assert again.json()["job_id"] == first.json()["job_id"] != other.json()["job_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["status"] == "queued"  # the first job's, as it stands
        assert "idempotent-replayed" not in first.headers
        reused = client.post("/m/jobs", json={**BODY, "horizon": 5},
                             headers={"Idempotency-Key": "order-7"})
        assert reused.status_code == 422
        assert reused.json()["details"][0]["field"] == "Idempotency-Key"
        r = redis_server.client()
        assert queue_length(redis_server) == 2, [
            (e, r.hgetall(f"{{sheaf}}:job:{d[b'job'].decode()}"))
            for e, d in r.xrange("{sheaf}:jobs:stream:m")]


def test_cancel_list_and_the_refusals_of_finished_and_unknown_jobs(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = jobs(redis_server)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    with host.serve(spec(), jobs=settings) as client:
        queued = client.post("/m/jobs", json=BODY).json()["job_id"]
        kept = client.post("/m/jobs", json={**BODY, "horizon": 2}).json()["job_id"]
        listed = client.get("/jobs", params={"status": "queued"}).json()["jobs"]
        assert [j["job_id"] for j in listed] == [kept, queued]  # newest first
        cancelled = client.delete(f"/jobs/{queued}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        with workers(config):  # started after: it must skip the cancelled job
            done = wait_job(client, kept)
        assert done["status"] == "succeeded"
        job = client.get(f"/jobs/{queued}").json()
        assert job["status"] == "cancelled" and job["attempts"] == 0
        again = client.delete(f"/jobs/{kept}")
        assert again.status_code == 409 and "already finished" in again.json()["message"]
        assert client.get(f"/jobs/{queued}/result").status_code == 409
        unknown = client.get("/jobs/" + "A" * 32)
        assert unknown.status_code == 404 and unknown.json()["error"] == "job_not_found"
        assert client.get("/jobs/../etc").status_code == 404
        assert queue_length(redis_server) == 0


def test_a_full_queue_and_an_absent_redis_are_503_with_retry_after(
        host: Host, redis_server: RedisServer) -> None:
    with host.serve(spec(), jobs=jobs(redis_server, max_queued=2)) as client:
        for _ in range(2):
            assert client.post("/m/jobs", json=BODY).status_code == 202
        full = client.post("/m/jobs", json=BODY)
        assert full.status_code == 503 and full.headers["retry-after"]
        assert "jobs.max_queued" in full.json()["message"]
        job_id = client.get("/jobs").json()["jobs"][0]["job_id"]
        redis_server.stop()
        for method, path in (("POST", "/m/jobs"), ("GET", f"/jobs/{job_id}"),
                             ("GET", "/jobs"), ("DELETE", f"/jobs/{job_id}")):
            away = client.request(method, path, json=BODY if method == "POST" else None)
            assert away.status_code == 503, (method, path, away.text)
            assert away.json()["error"] == "jobs_unavailable" and away.headers["retry-after"]
        assert client.post("/m/predict", json=BODY).status_code == 200  # unaffected
        redis_server.start()
        deadline = time.monotonic() + 20
        while (reply := client.get(f"/jobs/{job_id}")).status_code != 200:
            assert time.monotonic() < deadline, reply.text
            time.sleep(0.1)
        assert reply.json()["status"] == "queued"  # kept across the restart (AOF)


@TIER_1
def test_results_expire_after_result_ttl_s(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = jobs(redis_server, result_ttl_s=1)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    with host.serve(spec(), jobs=settings) as client, workers(config):
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        assert wait_job(client, job_id)["status"] == "succeeded"
        time.sleep(1.5)
        gone = client.get(f"/jobs/{job_id}")
        assert gone.status_code == 404 and "jobs.result_ttl_s" in gone.json()["message"]


@TIER_1
def test_a_running_streamed_job_shows_progress_and_stops_when_cancelled(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    steps = tmp_path / "steps.log"
    model = spec(backend_kwargs={"stream_steps": 200, "step_delay_s": 0.05,
                                 "step_log": str(steps)})
    settings = jobs(redis_server)
    config = write_config(tmp_path / "sheaf.yaml", [model], settings)
    with host.serve(model, jobs=settings) as client, workers(config):
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        deadline = time.monotonic() + 30
        while not (job := client.get(f"/jobs/{job_id}").json())["progress"]:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "running" and job["progress"]["total"] == 200
        cancelling = client.delete(f"/jobs/{job_id}")
        assert cancelling.status_code == 202 and cancelling.json()["status"] == "cancelling"
        done = wait_job(client, job_id)
        assert done["status"] == "cancelled" and "result" not in done
        time.sleep(0.3)  # the step under way when the cancel was seen may still end
        ran = len(steps.read_text().split())
        time.sleep(0.5)
        assert len(steps.read_text().split()) == ran < 200  # the backend stopped


@TIER_1
def test_large_results_are_written_under_results_uri(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    results = tmp_path / "results"
    settings = jobs(redis_server, inline_result_max_bytes=10, results_uri=str(results))
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    with host.serve(spec(), jobs=settings) as client, workers(config):
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded" and "result" not in job
        assert job["result_url"] == f"{results}/{job_id}.json"
        written = json.loads(Path(job["result_url"]).read_text())
        assert written["mean"] == [4.0, 4.0, 4.0]


@TIER_1
def test_large_results_go_to_s3_with_the_payload_storage_options(
        host: Host, redis_server: RedisServer, tmp_path: Path, s3: dict) -> None:
    import s3fs

    settings = jobs(redis_server, inline_result_max_bytes=10, results_uri="s3://jobs/results")
    payloads = {"storage_options": s3}
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings, payloads=payloads)
    with host.serve(spec(), jobs=settings, payloads=payloads) as client, workers(config):
        job_id = client.post("/m/jobs", json=BODY).json()["job_id"]
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded" and job["result_url"] == \
            f"s3://jobs/results/{job_id}.json"
        stored = s3fs.S3FileSystem(**s3).cat(job["result_url"])
        assert json.loads(stored)["mean"] == [4.0, 4.0, 4.0]


@TIER_1
def test_a_pipeline_takes_jobs_and_its_worker_loads_the_member_models(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    models = [spec("a"), spec("b", backend_kwargs={"bias": 10.0})]
    mix = PipelineSpec.model_validate({"name": "mix", "output": "avg", "nodes": {
        "a": {"model": "a"}, "b": {"model": "b"},
        "avg": {"combiner": "weighted_ensemble", "inputs": ["a", "b"]}}})
    settings = jobs(redis_server, models=["mix"])
    config = write_config(tmp_path / "sheaf.yaml", models, settings, pipelines=[mix])
    with host.serve(*models, pipelines=[mix], jobs=settings) as client, \
            workers(config) as (worker,):
        job = wait_job(client, client.post("/mix/jobs", json=BODY).json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["model_name"] == "mix"
        assert job["result"]["mean"] == client.post("/mix/predict", json=BODY).json()["mean"]
        assert "running jobs of mix" in worker.output
        refused = client.post("/a/jobs", json=BODY)  # no worker would ever run it
        assert refused.status_code == 404 and "jobs.models" in refused.json()["message"]
        assert "jobs" not in client.get("/models/a").json()["routes"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict, dict]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).received.append((body, dict(self.headers)))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@TIER_1
def test_a_callback_gets_the_finished_job_and_is_retried(
        host: Host, redis_server: RedisServer, tmp_path: Path) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received, _Receiver.fail_first = [], 1
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    settings = jobs(redis_server, callbacks_allowed_prefixes=[url],
                    callbacks_allow_private=True, retry_backoff_s=0.1)
    config = write_config(tmp_path / "sheaf.yaml", [spec()], settings)
    try:
        with host.serve(spec(), jobs=settings) as client, workers(config):
            job_id = client.post("/m/jobs", json={**BODY, "callback_url": url}).json()["job_id"]
            deadline = time.monotonic() + 30
            while not _Receiver.received:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            body, headers = _Receiver.received[0]
            assert body["job_id"] == job_id and body["status"] == "succeeded"
            assert body["result"]["mean"] == [4.0, 4.0, 4.0]
            assert headers["Sheaf-Job-Id"] == job_id
            deadline = time.monotonic() + 10
            while client.get(f"/jobs/{job_id}").json()["callback"] != "delivered":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            elsewhere = client.post("/m/jobs", json={**BODY,
                                                     "callback_url": "http://example.com/x"})
            assert elsewhere.status_code == 422
            assert elsewhere.json()["details"][0]["field"] == "callback_url"
    finally:
        receiver.shutdown()


@TIER_1
def test_callbacks_to_private_addresses_and_unlisted_servers_are_refused(
        host: Host, redis_server: RedisServer) -> None:
    settings = jobs(redis_server, callbacks_allowed_prefixes=["http://127.0.0.1:9/"])
    with host.serve(spec(), jobs=settings) as client:
        private = client.post("/m/jobs", params={"callback_url": "http://127.0.0.1:9/x"},
                              json=BODY)
        assert private.status_code == 422
        assert "callbacks_allow_private" in private.json()["details"][0]["message"]
    with host.serve(spec(), jobs=jobs(redis_server)) as client:
        off = client.post("/m/jobs", json={**BODY, "callback_url": "https://example.com/"})
        assert off.status_code == 422
        assert "callbacks_allowed_prefixes" in off.json()["details"][0]["message"]


@TIER_1
def test_with_api_keys_a_job_belongs_to_the_key_that_submitted_it(
        host: Host, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", "alice-key:m,bob-key:m,root-key:admin,eve-key:o")
    with host.serve(spec(), spec("o"), jobs=jobs(redis_server)) as client:
        def as_(key: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {key}"}

        assert client.post("/m/jobs", json=BODY).status_code == 401
        assert client.post("/m/jobs", json=BODY, headers=as_("eve-key")).status_code == 403
        job_id = client.post("/m/jobs", json=BODY, headers=as_("alice-key")).json()["job_id"]
        assert client.get(f"/jobs/{job_id}", headers=as_("alice-key")).status_code == 200
        assert client.get(f"/jobs/{job_id}", headers=as_("root-key")).status_code == 200
        assert client.get(f"/jobs/{job_id}").status_code == 401
        assert client.get(f"/jobs/{job_id}", headers=as_("bob-key")).status_code == 404
        assert client.delete(f"/jobs/{job_id}", headers=as_("bob-key")).status_code == 404
        assert client.get("/jobs", headers=as_("bob-key")).json()["jobs"] == []
        assert len(client.get("/jobs", headers=as_("alice-key")).json()["jobs"]) == 1
        assert len(client.get("/jobs", headers=as_("root-key")).json()["jobs"]) == 1
        again = client.post("/m/jobs", json=BODY, headers={**as_("bob-key"),
                                                           "Idempotency-Key": "k"})
        mine = client.post("/m/jobs", json=BODY, headers={**as_("alice-key"),
                                                          "Idempotency-Key": "k"})
        assert again.json()["job_id"] != mine.json()["job_id"]  # keys are per API key


def test_without_a_jobs_section_there_are_no_job_routes(host: Host) -> None:
    with host.serve(spec()) as client:
        missing = client.post("/m/jobs", json=BODY)
        assert missing.status_code == 404
        assert "add a `jobs:` section" in missing.json()["message"]
        assert "jobs" not in client.get("/models/m").json()["routes"]
        assert client.get("/jobs").status_code == 404
