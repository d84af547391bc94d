"""The HTTP behaviour of a sheaf server, run against every host: tier 1 (uvicorn) and Ray
Serve (ingress + one deployment per model). Parity is proven here, not claimed: each test
talks HTTP only and reads the server's own counters (GET /models/NAME → stats)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from hosts import Flag, Host
from server_support import POISON, ScriptedPlugin, serving, sse_events, steps_logged

from sheaf_core import ModelSpec
from sheaf_server import build_app
from sheaf_server.settings import ServedModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}


def spec(name: str = "m", **kwargs: object) -> ServedModelSpec:
    return ServedModelSpec(name=name, backend="test", **kwargs)


def stats(client: httpx.Client, name: str = "m") -> dict:
    return client.get(f"/models/{name}").json()["stats"]


def test_predict_returns_the_typed_response_with_the_request_id(host: Host) -> None:
    with host.serve(spec()) as client:
        response = client.post("/m/predict", json={**BODY, "output_mode": "quantiles"},
                               headers={"X-Request-ID": "req-42"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "req-42"
        body = response.json()
        assert body["request_id"] == "req-42" and body["model_name"] == "m"
        assert body["mean"] == [4.0, 4.0, 4.0] and set(body["quantiles"]) == {"0.1", "0.5", "0.9"}


def test_a_request_id_is_generated_or_taken_from_the_body(host: Host) -> None:
    with host.serve(spec()) as client:
        generated = client.post("/m/predict", json=BODY)
        assert generated.headers["x-request-id"]  # tier 1: 32 hex digits; Ray: a UUID
        assert generated.json()["request_id"] == generated.headers["x-request-id"]
        from_body = client.post("/m/predict", json={**BODY, "request_id": "mine-1"})
        assert from_body.headers["x-request-id"] == "mine-1"
        refused = client.post("/m/predict", json={**BODY, "request_id": "mine-2",
                                                  "past_covariates": {"t": [1] * 4}})
        assert refused.status_code == 422 and refused.json()["request_id"] == "mine-2"
        assert refused.headers["x-request-id"] == "mine-2"
        assert client.get("/health").headers["x-request-id"]


def test_invalid_body_is_a_422_naming_each_field(host: Host) -> None:
    with host.serve(spec()) as client:
        response = client.post("/m/predict", json={"history": [1, "x"], "horizon": 0,
                                                   "colour": 1}, headers={"X-Request-ID": "r1"})
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "invalid_request" and body["request_id"] == "r1"
        assert {d["field"] for d in body["details"]} == {"history.1", "horizon", "colour"}
        not_json = client.post("/m/predict", content=b"{nope")
        assert not_json.status_code == 422 and not_json.json()["details"][0]["field"] == "body"

def test_the_route_decides_the_model_whatever_model_name_the_body_names(host: Host) -> None:
    """sheaf-serve's clients send their deployment name in the body: the route decides,
    and the response says which model answered."""
    with host.serve(spec()) as client:
        response = client.post("/m/predict", json={**BODY, "model_name": "chronos-prod"})
        assert response.status_code == 200 and response.json()["model_name"] == "m"


def test_a_backend_refusal_is_a_422_naming_the_field(host: Host) -> None:
    with host.serve(spec()) as client:
        response = client.post("/m/predict", json={**BODY, "past_covariates": {"t": [1] * 4}})
        assert response.status_code == 422
        assert response.json()["details"][0]["field"] == "past_covariates"


def test_unknown_model_is_a_404_listing_the_served_ones(host: Host) -> None:
    """On every model route (from the one route table): stream and health too."""
    with host.serve(spec(), ModelSpec(name="plain", backend="baseline")) as client:
        for response in (client.post("/nope/predict", json=BODY), client.get("/nope/ready"),
                         client.post("/nope/stream", json=BODY), client.get("/nope/health")):
            assert response.status_code == 404
            assert response.json()["error"] == "model_not_found"
            assert "served models: m, plain" in response.json()["message"]
        for name in ("m", "plain"):  # every model streams (a plain backend: the result only)
            assert client.get(f"/models/{name}").json()["routes"] == {
                route: f"/{name}/{route}" for route in ("predict", "stream", "health",
                                                        "ready")}


def test_a_predict_route_answers_other_methods_with_a_405(host: Host) -> None:
    with host.serve(spec()) as client:
        response = client.get("/m/predict", headers={"X-Request-ID": "r405"})
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert response.json() == {"error": "method_not_allowed", "message": "Method Not Allowed",
                                   "request_id": "r405", "details": []}
        assert client.post("/m/predict", json=BODY).status_code == 200


def test_a_body_over_the_limit_is_a_413(host: Host) -> None:
    with host.serve(spec(), max_body_bytes=2048) as client:
        response = client.post("/m/predict", json={"history": [1.0] * 2000, "horizon": 1})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"

        def chunks():  # no Content-Length: counted while reading
            yield b'{"history": [' + b"1.0," * 1000
            yield b"1.0], " + b'"horizon": 1}'

        assert client.post("/m/predict", content=chunks()).status_code == 413


def test_a_backend_failure_is_a_500_without_internals_then_serves_on(host: Host) -> None:
    with host.serve(spec()) as client:
        failed = client.post("/m/predict", json={"history": [1.0, POISON], "horizon": 1},
                             headers={"X-Request-ID": "boom-1"})
        assert failed.status_code == 500
        body = failed.json()
        assert body["error"] == "backend_error" and body["request_id"] == "boom-1"
        assert "secret" not in failed.text and "Traceback" not in failed.text
        assert client.post("/m/predict", json=BODY).status_code == 200


def test_a_poisoned_request_fails_alone_when_batched_with_good_ones(host: Host) -> None:
    with host.serve(spec(batching={"max_batch_size": 8, "max_wait_ms": 100})) as client:
        bodies = [BODY] * 5 + [{"history": [POISON], "horizon": 1}]
        codes = _concurrent_posts(client, "/m/predict", bodies)
        assert sorted(codes) == [200] * 5 + [500]


def test_readiness_is_503_with_the_reason_until_loaded(host: Host, flag: Flag) -> None:
    gate = flag("weights-arrived")
    slow = spec("slow", backend_kwargs={"gate": gate})
    with host.serve(slow, spec("fast"), wait_ready=False) as client:
        assert client.get("/fast/ready").status_code in (200, 503)
        not_ready = client.get("/slow/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["reason"].startswith("loading weights")
        assert client.get("/ready").status_code == 503
        refused = client.post("/slow/predict", json=BODY)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        Path(gate).touch()
        _wait_for(lambda: client.get("/ready").status_code == 200, timeout=60)
        assert client.get("/slow/ready").status_code == 200
        assert client.post("/slow/predict", json=BODY).status_code == 200


def test_a_model_whose_load_failed_keeps_the_others_serving(host: Host) -> None:
    """The failed model is refused without Retry-After (waiting will not heal it); /ready
    stays 503 naming it, unless server.ready_when is `any`."""
    for ready_when in ("all", "any"):
        with host.serve(spec("bad", backend_kwargs={"fail_load": True}), spec("good"),
                        wait_ready=False, ready_when=ready_when) as client:
            _wait_for(lambda: client.get("/bad/ready").json()["state"] == "failed",
                      timeout=90)
            bad = client.get("/bad/ready")
            assert bad.status_code == 503 and "weights are corrupt" in bad.json()["reason"]
            refused = client.post("/bad/predict", json=BODY)
            assert refused.status_code == 503 and refused.json()["error"] == "model_failed"
            assert "retry-after" not in refused.headers
            _wait_for(lambda: client.get("/good/ready").status_code == 200, timeout=60)
            assert client.post("/good/predict", json=BODY).status_code == 200
            ready = client.get("/ready")
            assert ready.json()["models"]["bad"]["state"] == "failed"
            if ready_when == "all":
                assert ready.status_code == 503 and ready.json()["ready"] is False
                assert "bad (failed: " in ready.json()["message"]
                assert "good" not in ready.json()["message"]
            else:
                assert ready.status_code == 200 and ready.json()["ready"] is True


HOSTILE = [  # each once a 500 (an overflow, a date past year 9999, an index out of range) or
    #          a 200 with `null` where the schema promises numbers
    ({"history": [1, 2, 3, 4], "horizon": 2, "frequency": "999999999999W"}, "frequency"),
    ({"history": [1, 2, 3, 4], "horizon": 2, "frequency": "1d", "start": "9999-12-30"},
     "start"),
    ({"history": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "target_index": 3}, "target_index"),
    ('{"history": [1, 2, Infinity, 4, 5, 6, 7, 1], "horizon": 3, "frequency": "1d"}',
     "history.2"),
    ({"history": [1e308, -1e308, 1e308, 5.0], "horizon": 3}, "history"),
    ({"history": [None, None, None], "horizon": 3}, "history"),
]


def test_hostile_input_is_a_422_naming_the_field(host: Host) -> None:
    with host.serve(spec()) as client:
        for body, field in HOSTILE:
            response = (client.post("/m/predict", content=body) if isinstance(body, str)
                        else client.post("/m/predict", json=body))
            assert response.status_code == 422, response.text
            assert [d["field"] for d in response.json()["details"]] == [field]
        assert client.post("/m/predict", json=BODY).status_code == 200


def test_a_request_over_the_model_s_limits_is_a_422_naming_the_limit(host: Host) -> None:
    limits = {"max_horizon": 24, "max_forecast_values": 200}
    with host.serve(spec(limits=limits)) as client:
        long = client.post("/m/predict", json={**BODY, "horizon": 25})
        assert long.status_code == 422
        assert long.json()["details"][0]["field"] == "horizon"
        assert "limits.max_horizon" in long.json()["details"][0]["message"]
        many = client.post("/m/predict", json={**BODY, "horizon": 20, "num_samples": 11,
                                               "output_mode": "samples"})
        assert many.status_code == 422
        assert "= 220 values" in many.json()["details"][0]["message"]
        assert client.post("/m/predict", json={**BODY, "horizon": 20, "num_samples": 10,
                                               "output_mode": "samples"}).status_code == 200
        shown = client.get("/models/m").json()["limits"]
        assert shown["max_horizon"] == 24 and shown["max_num_samples"] == 1000


def test_a_batch_past_its_deadline_stops_at_the_backend_s_next_step(host: Host,
                                                                   flag: Flag) -> None:
    """The caller gets its 504 at the deadline, and the worker stops the backend at its
    next deadline check instead of computing for nobody, then takes the next batch (which
    stops at its own deadline too): far fewer than the 2 x 400 steps ran."""
    log = flag("steps")
    slow = spec(backend_kwargs={"work_steps": 400, "step_delay_s": 0.01, "step_log": log},
                timeout_s=0.5, warmup=False)
    with host.serve(slow) as client:
        late = client.post("/m/predict", json=BODY)
        assert late.status_code == 504 and late.json()["error"] == "deadline_exceeded"
        after = client.post("/m/predict", json=BODY)  # runs once the worker is free
        assert after.status_code == 504
        assert steps_logged(log) < 400


def test_a_full_queue_is_a_503_with_retry_after(host: Host) -> None:
    policy = {"max_batch_size": 1, "max_wait_ms": 0, "max_queue_size": 2}
    with host.serve(spec(backend_kwargs={"delay_s": 0.3}, batching=policy)) as client:
        codes = _concurrent_posts(client, "/m/predict", [BODY] * 8, want_headers=True)
        assert sum(1 for c, _ in codes if c == 503) >= 3
        assert all(h.get("retry-after") for c, h in codes if c == 503)
        assert any(c == 200 for c, _ in codes)


def test_a_request_past_its_deadline_is_a_504(host: Host, flag: Flag) -> None:
    fast = flag("fast")
    slow = spec(backend_kwargs={"delay_s": 0.5, "fast_after": fast}, timeout_s=0.2)
    with host.serve(slow) as client:
        response = client.post("/m/predict", json=BODY)
        assert response.status_code == 504 and response.json()["error"] == "deadline_exceeded"
        Path(fast).touch()
        time.sleep(0.4)  # let the slow batch finish; the model serves again
        assert client.post("/m/predict", json=BODY).status_code == 200


def test_batches_form_under_concurrency(host: Host) -> None:
    batched = spec(backend_kwargs={"delay_s": 0.05},
                   batching={"max_batch_size": 16, "max_wait_ms": 20})
    with host.serve(batched) as client:
        codes = _concurrent_posts(client, "/m/predict", [BODY] * 32)
        assert codes == [200] * 32
        counted = stats(client)
    assert counted["requests"] == 32 and counted["batches"] < 32
    assert counted["max_batch_size"] > 1 and counted["mean_batch_size"] > 1


def test_on_ray_every_replica_forms_its_own_batches(request: pytest.FixtureRequest) -> None:
    two = spec(backend_kwargs={"delay_s": 0.05}, resources={"num_cpus": 0.5},
               batching={"max_batch_size": 8, "max_wait_ms": 20}, ray={"num_replicas": 2})
    replicas: dict[str, dict] = {}
    with Host("ray", request).serve(two) as client:
        for _ in range(10):
            # GET /models/m answers from the replica Serve's router picks (by queue length):
            # asked amid a burst of predictions, both replicas answer.
            codes, infos = _burst(client, posts=32, gets=16)
            assert codes == [200] * 32
            replicas.update((info["replica"], info["stats"]) for info in infos)
            batching = [r for r in replicas.values() if (r["mean_batch_size"] or 0) > 1]
            if len(batching) == 2:
                break
    assert len(replicas) == 2, "Serve sent every describe call to one replica"
    assert all((r["mean_batch_size"] or 0) > 1 for r in replicas.values()), replicas


def test_bucket_by_keeps_unequal_keys_apart(host: Host) -> None:
    bucketed = spec(backend_kwargs={"delay_s": 0.05}, batching={
        "max_batch_size": 16, "max_wait_ms": 50, "bucket_by": ["horizon"]})
    with host.serve(bucketed) as client:
        bodies = [{**BODY, "horizon": 1 + i % 2} for i in range(12)]
        responses = _concurrent_posts(client, "/m/predict", bodies, want_json=True)
        assert all(len(r["mean"]) == b["horizon"] for r, b in zip(responses, bodies,
                                                                   strict=True))
        counted = stats(client)
    assert counted["max_batch_size"] > 1
    assert counted["batches"] >= 2  # at least one per bucket


ONE_AT_A_TIME = spec(backend_kwargs={"delay_s": 2.0},  # time for the cancel to travel
                     batching={"max_batch_size": 1, "max_wait_ms": 0})


def test_a_client_that_disconnects_before_dispatch_is_dropped(
        request: pytest.FixtureRequest) -> None:
    # Tier 1 only: on Ray the client talks to Ray's HTTP proxy (HAProxy by default), which
    # does not always pass a client's disconnect on to the ingress replica — the next test
    # shows what sheaf guarantees there; docs/ray.md says what a user sees.
    with Host("asgi", request).serve(ONE_AT_A_TIME) as client:
        base = str(client.base_url)

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=base) as ac:
                first = asyncio.create_task(ac.post("/m/predict", json=BODY))
                await _until_stats(ac, requests=1)  # first occupies the backend
                with pytest.raises(httpx.TimeoutException):
                    await ac.post("/m/predict", json={**BODY, "horizon": 7}, timeout=0.1)
                assert (await first).status_code == 200

        asyncio.run(scenario())
        counted = stats(client)
    assert counted["requests"] == 1  # the abandoned request never ran
    assert counted["dropped"] == 1


def test_on_ray_a_call_the_ingress_abandons_is_dropped_before_it_runs(
        request: pytest.FixtureRequest) -> None:
    """What the ingress does when it learns its client left: cancel the replica call (the
    `DeploymentResponse`); the replica's batcher then drops the request unrun."""
    from ray import serve

    from sheaf_server.engine import Call
    from sheaf_server.ray.runner import _on_handle_loop

    with Host("ray", request).serve(ONE_AT_A_TIME) as client:
        base = str(client.base_url)

        async def scenario() -> None:
            handle = serve.get_deployment_handle("m", "sheaf")
            async with httpx.AsyncClient(base_url=base) as ac:
                first = handle.handle.remote(Call("m", "first", json.dumps(BODY), budget_s=30))
                await _until_stats(ac, requests=1)
                abandoned = handle.handle.remote(Call("m", "second", json.dumps(BODY),
                                                      budget_s=30))
                await _until_stats(ac, queued=1)  # it reached the replica's batcher
                abandoned.cancel()
                assert (await first).request_id == "first"

        _on_handle_loop(scenario())
        counted = stats(client)
    assert counted["requests"] == 1 and counted["dropped"] == 1, counted


async def _until_stats(client: httpx.AsyncClient, **wanted: int) -> None:
    """Wait (bounded) until the model's counters reach `wanted`: on a busy machine a fixed
    sleep does not guarantee that a request got where the test needs it."""
    for _ in range(400):
        counted = (await client.get("/models/m")).json()["stats"]
        if all(counted[key] >= value for key, value in wanted.items()):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the model's counters never reached {wanted}: {counted}")


def test_sagemaker_invocations_and_ping(host: Host) -> None:
    with host.serve(spec("a"), spec("b"), default_model="b") as client:
        assert client.get("/ping").status_code == 200
        assert client.post("/invocations", json=BODY).json()["model_name"] == "b"
        targeted = client.post("/invocations", json=BODY,
                               headers={"X-Amzn-SageMaker-Target-Model": "a"})
        assert targeted.json()["model_name"] == "a"
    with host.serve(spec("a"), spec("b")) as client:
        assert client.post("/invocations", json={**BODY, "model_name": "a"}).status_code == 200
        missing = client.post("/invocations", json=BODY)
        assert missing.status_code == 422 and missing.json()["details"][0]["field"] == "model_name"


def test_sagemaker_multirecord_jsonlines_answers_one_line_per_record_in_order(
        host: Host) -> None:
    batched = spec(backend_kwargs={"delay_s": 0.02}, batching={"max_batch_size": 16,
                                                               "max_wait_ms": 10})
    records = [{**BODY, "horizon": 1 + i % 3} for i in range(12)]
    records[5] = {**BODY, "horizon": 0}  # invalid: answered on its own line
    records[7] = {**BODY, "request_id": "mine"}
    body = "".join(json.dumps(r) + "\n" for r in records)
    with host.serve(batched) as client:
        response = client.post("/invocations", content=body, headers={
            "Content-Type": "application/jsonlines", "X-Request-ID": "batch-1"})
        counted = stats(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jsonlines"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 12
    for number, (line, record) in enumerate(zip(lines, records, strict=True), 1):
        if number == 6:
            assert line["status"] == 422 and line["details"][0]["field"] == "horizon"
            assert line["request_id"] == "batch-1-6"
            continue
        assert len(line["mean"]) == record["horizon"]
        assert line["request_id"] == ("mine" if number == 8 else f"batch-1-{number}")
    assert counted["requests"] == 11 and counted["mean_batch_size"] > 1


def test_sagemaker_execution_parameters_and_media_types_named_when_refused(
        host: Host) -> None:
    """Batch Transform reads /execution-parameters; a body type the model cannot read is a
    415 naming it, an Accept the answer cannot satisfy a 406 naming both types."""
    with host.serve(spec(), max_body_bytes=6 * 2**20,
                    sagemaker={"max_concurrent_transforms": 2}) as client:
        assert client.get("/execution-parameters").json() == {
            "MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
        csv = client.post("/invocations", content=b"1,2,3",
                          headers={"content-type": "text/csv"})
        assert csv.status_code == 415 and "'text/csv'" in csv.json()["message"]
        refused = client.post("/invocations", json=BODY, headers={"accept": "text/csv"})
        assert refused.status_code == 406 and refused.json()["error"] == "not_acceptable"
        assert "text/csv" in refused.json()["message"]
        assert "application/json" in refused.json()["message"]
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
        lines = client.post("/invocations", content=json.dumps(BODY) + "\n", headers={
            "content-type": "application/jsonlines", "accept": "application/json"})
        assert lines.status_code == 406
        for accept in ("application/json", "application/*", "*/*", "text/csv, */*;q=0.1"):
            answer = client.post("/m/predict", json=BODY, headers={"accept": accept})
            assert answer.status_code == 200, (accept, answer.text)
        assert client.post("/m/predict", json=BODY, headers={
            "accept": "application/json;q=0"}).status_code == 406


def test_openapi_has_typed_request_and_response_per_model_and_a_listing(host: Host) -> None:
    with host.serve(spec("a"), spec("b")) as client:
        document = client.get("/openapi.json").json()
        for name in ("a", "b"):
            operation = document["paths"][f"/{name}/predict"]["post"]
            assert operation["requestBody"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/TimeSeriesRequest"}
            ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok == {"$ref": "#/components/schemas/TimeSeriesResponse"}
            assert "422" in operation["responses"] and "503" in operation["responses"]
        assert "horizon" in document["components"]["schemas"]["TimeSeriesRequest"]["properties"]
        assert client.get("/docs").status_code == 200
        listing = client.get("/models").json()["models"]
        assert [m["name"] for m in listing] == ["a", "b"]
        assert "history" in listing[0]["request_schema"]["properties"]
        assert "mean" in listing[0]["response_schema"]["properties"]


def test_shutdown_drains_in_flight_requests() -> None:
    """Tier 1: uvicorn's graceful shutdown lets queued and running batches finish."""
    application = build_app([spec(backend_kwargs={"delay_s": 0.3},
                           batching={"max_batch_size": 4, "max_wait_ms": 0})],
                            plugins=[ScriptedPlugin()])
    results: list[int] = []
    with serving(application) as client:
        url = f"{client.base_url}/m/predict"
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(url, json=BODY, timeout=20).status_code)) for _ in range(6)]
        for thread in threads:
            thread.start()
        model = application.state.engine.models["m"]
        warmup = sum(model.backend.batch_sizes)  # answered before the server was ready

        def arrived() -> int:  # requests running or queued
            return sum(model.backend.batch_sizes) - warmup + model.batcher.queued

        for _ in range(500):  # until all six reached the server
            if arrived() == 6:
                break
            time.sleep(0.01)
        assert arrived() == 6
    for thread in threads:
        thread.join(10)
    assert results == [200] * 6


def _concurrent_posts(client: httpx.Client, path: str, bodies: list[dict],
                      want_headers: bool = False, want_json: bool = False) -> list:
    async def run() -> list:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=20) as ac:
            responses = await asyncio.gather(*(ac.post(path, json=b) for b in bodies))
        if want_json:
            return [r.json() for r in responses]
        if want_headers:
            return [(r.status_code, r.headers) for r in responses]
        return [r.status_code for r in responses]

    return asyncio.run(run())


def _burst(client: httpx.Client, posts: int, gets: int) -> tuple[list[int], list[dict]]:
    """`posts` predictions to /m/predict and `gets` GET /models/m, all at once."""
    async def run() -> tuple[list[int], list[dict]]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=20) as ac:
            predictions = [ac.post("/m/predict", json=BODY) for _ in range(posts)]
            descriptions = [ac.get("/models/m") for _ in range(gets)]
            answers = await asyncio.gather(*predictions, *descriptions)
        return ([r.status_code for r in answers[:posts]],
                [r.json() for r in answers[posts:]])

    return asyncio.run(run())


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_stream_sends_progress_then_the_result_predict_gives(host: Host) -> None:
    with host.serve(spec(backend_kwargs={"stream_steps": 3})) as client:
        with client.stream("POST", "/m/stream", json=BODY,
                           headers={"X-Request-ID": "s-1"}) as response:
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "s-1"
            events = sse_events(response)
        predicted = client.post("/m/predict", json=BODY).json()
    assert [kind for kind, _ in events] == ["progress"] * 3 + ["result"]
    assert [(d["step"], d["total"]) for _, d in events[:3]] == [(1, 3), (2, 3), (3, 3)]
    result = events[-1][1]
    assert (result["request_id"], result["model_name"]) == ("s-1", "m")
    assert result["mean"] == predicted["mean"]


def test_a_model_without_step_progress_streams_just_its_result(host: Host) -> None:
    with host.serve(spec()) as client, \
            client.stream("POST", "/m/stream", json=BODY) as response:
        assert response.status_code == 200
        assert [kind for kind, _ in sse_events(response)] == ["result"]


def test_stream_refusals_are_plain_statuses_before_any_event(host: Host) -> None:
    with host.serve(spec()) as client:
        bad = client.post("/m/stream", json={**BODY, "horizon": 0})
        assert bad.status_code == 422
        assert [d["field"] for d in bad.json()["details"]] == ["horizon"]
        assert client.post("/nope/stream", json=BODY).status_code == 404


def test_a_stream_whose_backend_fails_ends_with_an_error_event(host: Host) -> None:
    with host.serve(spec(backend_kwargs={"stream_steps": 1})) as client:
        poisoned = {**BODY, "history": [1.0, POISON, 3.0]}
        with client.stream("POST", "/m/stream", json=poisoned,
                           headers={"X-Request-ID": "s-bad"}) as response:
            events = sse_events(response)
        assert [kind for kind, _ in events] == ["progress", "error"]
        error = events[-1][1]
        assert (error["status"], error["request_id"]) == (500, "s-bad")
        assert "secret" not in json.dumps(error)
        assert client.post("/m/predict", json=BODY).status_code == 200  # still serving


def test_a_streaming_client_that_disconnects_stops_the_backend(host: Host, flag: Flag) -> None:
    log = flag("steps.log")
    slow = spec(backend_kwargs={"stream_steps": 200, "step_delay_s": 0.02, "step_log": log})
    with host.serve(slow) as client:
        with client.stream("POST", "/m/stream", json=BODY) as response:
            for line in response.iter_lines():
                if line.startswith("event: progress"):
                    break  # one event seen: leave
        seen = -1
        for _ in range(100):
            if steps_logged(log) == seen:
                break
            seen = steps_logged(log)
            time.sleep(0.3)
        assert seen < 100, f"{seen} of 200 steps ran after the client left"
        assert client.post("/m/predict", json=BODY).status_code == 200


def test_a_stream_past_its_deadline_ends_with_a_504_event(host: Host) -> None:
    slow = spec(backend_kwargs={"stream_steps": 100, "step_delay_s": 0.05}, timeout_s=0.5)
    with host.serve(slow) as client:
        with client.stream("POST", "/m/stream", json=BODY) as response:
            events = sse_events(response)
        assert events[-1][0] == "error" and events[-1][1]["status"] == 504
        assert {kind for kind, _ in events[:-1]} <= {"progress"}


def test_streams_share_the_model_s_bounded_queue(host: Host) -> None:
    policy = {"max_batch_size": 1, "max_wait_ms": 0, "max_queue_size": 1}
    # On Ray the handle's own queue (ray.max_queued_requests, default max_queue_size) also
    # counts describe calls in flight; room there leaves the refusal to the model's queue.
    slow = spec(backend_kwargs={"stream_steps": 40, "step_delay_s": 0.05}, batching=policy,
                ray={"max_queued_requests": 8})
    with host.serve(slow) as client:
        base = str(client.base_url)

        async def scenario() -> tuple[int, str | None]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as ac:
                running = asyncio.create_task(ac.post("/m/stream", json=BODY))
                await _until_stats(ac, requests=1)  # one streams ...
                queued = asyncio.create_task(ac.post("/m/stream", json=BODY))
                await _until_stats(ac, queued=1)  # ... one waits ...
                refused = await ac.post("/m/stream", json=BODY)  # ... the queue is full
                assert (await running).status_code == 200
                assert (await queued).status_code == 200
                return refused.status_code, refused.headers.get("retry-after")

        status, retry_after = asyncio.run(scenario())
    assert status == 503 and retry_after is not None


def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes() -> None:
    """Tier 1 (on Ray, HAProxy's own timeouts face the client): a client that sends part
    of its body and stalls gets a 408 after server.body_timeout_s, not a held connection."""
    from sheaf_core import ServerSettings

    settings = ServerSettings(body_timeout_s=0.5)
    application = build_app([spec()], settings=settings, plugins=[ScriptedPlugin()])
    with serving(application) as client:
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /m/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 100\r\n\r\n{\"history\": [1")
            answer = b""
            while chunk := sock.recv(65536):  # ends when the server closes the connection
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["error"] == "request_timeout"
        assert client.post("/m/predict", json=BODY).status_code == 200
