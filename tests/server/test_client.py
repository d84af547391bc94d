"""The typed clients (`sheaf_core.client`) against a live server: typed answers, typed
stream events, errors that carry what the server said, and retries that honour Retry-After."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import httpx
import pytest
from server_support import ScriptedPlugin, serving

from sheaf_core import ModelSpec, TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.client import (
    AsyncSheafClient,
    Progress,
    Result,
    RetryPolicy,
    SheafClient,
    SheafHTTPError,
    _Wire,
)
from sheaf_core.errors import FieldProblem
from sheaf_server import build_app

REQUEST = TimeSeriesRequest(history=[1.0, 2.0, 3.0, 4.0], horizon=3)
FAST = RetryPolicy(attempts=3, wait_initial_s=0.01, wait_max_s=0.05, wait_jitter_s=0.01)


@pytest.fixture(scope="module")
def base_url() -> str:  # type: ignore[misc]
    spec = ModelSpec(name="m", backend="test", backend_kwargs={"stream_steps": 3})
    with serving(build_app([spec], plugins=[ScriptedPlugin()])) as client:
        yield str(client.base_url)


def test_predict_returns_the_typed_response_under_the_request_id(base_url: str) -> None:
    with SheafClient(base_url) as client:
        answer = client.predict("m", REQUEST, request_id="c-1")
    assert isinstance(answer, TimeSeriesResponse)
    assert (answer.request_id, answer.model_name, len(answer.mean)) == ("c-1", "m", 3)


def test_a_plain_dict_is_sent_as_it_is_and_answered_typed(base_url: str) -> None:
    """The server validates the dict; the answer is typed from the model's contract, which
    GET /models/m names (asked once)."""
    body = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
    with SheafClient(base_url) as client:
        answer = client.predict("m", body, request_id="d-1")
        events = list(client.stream("m", body))
        with pytest.raises(SheafHTTPError) as unknown:
            client.predict("nope", body)
        with pytest.raises(SheafHTTPError) as invalid:
            client.predict("m", {**body, "horizon": 0})
    assert isinstance(answer, TimeSeriesResponse) and answer.request_id == "d-1"
    assert isinstance(events[-1], Result) and isinstance(events[-1].response,
                                                         TimeSeriesResponse)
    assert unknown.value.status == 404 and "served models: m" in unknown.value.message
    assert [p.field for p in invalid.value.problems] == ["horizon"]

    async def scenario() -> object:
        async with AsyncSheafClient(base_url) as client:
            return await client.predict("m", body)

    assert isinstance(asyncio.run(scenario()), TimeSeriesResponse)


def test_an_error_is_raised_at_once_with_status_fields_and_request_id(
        base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sheaf.client")
    with SheafClient(base_url, retry=FAST) as client, \
            pytest.raises(SheafHTTPError) as info:
        client.predict("m", REQUEST.model_copy(update={"past_covariates": {"t": [1.0] * 4}}),
                       request_id="c-2")
    error = info.value
    assert (error.status, error.code, error.request_id) == (422, "invalid_request", "c-2")
    assert [p.field for p in error.problems] == ["past_covariates"]
    assert not [r for r in caplog.records if "retryable" in r.getMessage()]  # 4xx: no retry


def test_stream_yields_typed_progress_then_the_result(base_url: str) -> None:
    with SheafClient(base_url) as client:
        events = list(client.stream("m", REQUEST, request_id="c-3"))
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert isinstance(events[-1], Result) and events[-1].response.request_id == "c-3"
    with SheafClient(base_url) as client, pytest.raises(SheafHTTPError) as info:
        list(client.stream("nope", REQUEST))
    assert info.value.status == 404


def test_the_async_client_answers_alike(base_url: str) -> None:
    async def scenario() -> tuple[TimeSeriesResponse, list[object]]:
        async with AsyncSheafClient(base_url) as client:
            answer = await client.predict("m", REQUEST, request_id="a-1")
            events = [event async for event in client.stream("m", REQUEST)]
            return answer, events  # type: ignore[return-value]

    answer, events = asyncio.run(scenario())
    assert answer.request_id == "a-1" and isinstance(answer, TimeSeriesResponse)
    assert len(events) == 4 and isinstance(events[-1], Result)


def test_a_503_with_retry_after_is_retried_until_the_model_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The model is loading (503, Retry-After 5); the client waits — here capped to 0.1 s —
    and retries until the load is over."""
    caplog.set_level(logging.INFO, "sheaf.client")
    gate = tmp_path / "gate"
    spec = ModelSpec(name="m", backend="test", backend_kwargs={"gate": str(gate)})
    policy = RetryPolicy(attempts=200, timeout_s=60, max_retry_after_s=0.1)
    outcome: list[object] = []
    with serving(build_app([spec], plugins=[ScriptedPlugin()]), wait_ready=False) as http, \
            SheafClient(str(http.base_url), retry=policy) as client:
        worker = threading.Thread(target=lambda: outcome.append(client.predict("m", REQUEST)))
        worker.start()
        for _ in range(600):  # bounded: until the client has been refused at least once
            if any("Retry-After 5" in r.getMessage() for r in caplog.records):
                break
            worker.join(0.05)
        gate.touch()
        worker.join(60)
    assert isinstance(outcome[0], TimeSeriesResponse)
    refused = [r.getMessage() for r in caplog.records if "retryable" in r.getMessage()]
    assert refused and all("503 model_not_ready; retryable after 0.10s (Retry-After 5" in m
                           for m in refused)


def test_the_retry_decision() -> None:
    """Retry-After is waited as sent (up to the cap); statuses outside the policy, 4xx
    errors and a failed model are raised; connections not made are retried with backoff."""
    wire = _Wire(RetryPolicy(max_retry_after_s=30), None)

    def error(status: int, retry_after: float | None) -> SheafHTTPError:
        return SheafHTTPError(status, "x", "", "id", [FieldProblem("f", "m")], retry_after)

    assert wire.backoff(error(503, 1.5)) == 1.5
    assert wire.backoff(error(429, 100)) == 30
    assert wire.backoff(error(503, None)) is True
    assert wire.backoff(error(422, None)) is False and wire.backoff(error(500, 1)) is False
    failed = SheafHTTPError(503, "model_failed", "", "id", [], None)
    assert wire.backoff(failed) is False  # a load that failed: waiting will not heal it
    assert wire.backoff(httpx.ConnectError("refused")) is True
    assert wire.backoff(ValueError()) is False


def test_a_server_that_cannot_be_reached_is_retried_then_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sheaf.client")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    with SheafClient(f"http://127.0.0.1:{port}", retry=FAST) as client, \
            pytest.raises(httpx.ConnectError):
        client.predict("m", REQUEST)
    assert len([r for r in caplog.records if "cannot connect" in r.getMessage()]) == 3  # tries
