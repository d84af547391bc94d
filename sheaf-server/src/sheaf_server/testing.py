"""Test helpers for plugin authors (and Sheaf's own tests): a model served on a real
uvicorn, a server-sent-event reader, and `ServingConformance` — the backend behind the
engine and real HTTP answers exactly as it does in process. `pip install
'sheaf-server[testing]'`.

    from sheaf_server.testing import ServingConformance

    class TestMyBackendServed(ServingConformance):
        backend_name = "mine"
        ...                       # the same fixtures as sheaf_core.testing.BackendConformance

The in-process suite (`BackendConformance`) checks the backend's own promises; this one
adds what a user of the server sees: predict and stream over HTTP equal to the backend in
process, refusals as 422s naming the field, the request id echoed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from sheaf_core.backend import Backend
from sheaf_core.spec import ModelSpec
from sheaf_core.testing import BackendConformance
from sheaf_server.model_server import ModelServer
from sheaf_server.settings import SheafConfig

#: The name the served model gets in `ServingConformance`.
SERVED_NAME = "model"


@contextmanager
def serving(config: SheafConfig | Iterable[ModelSpec], *, plugins: Iterable[object] = (),
            timeout: float = 120) -> Iterator[httpx.Client]:
    """`config` served by tier 1 (uvicorn in a thread, a free port on 127.0.0.1) until the
    block ends; a client for it, once GET /ready answers 200."""
    with ModelServer(config, port=0, plugins=plugins, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "", timeout=timeout) as client:
        wait_until_ready(client, timeout)
        yield client


def wait_until_ready(client: httpx.Client | str, timeout: float = 120, *, path: str = "/ready",
                     explain: Callable[[], str] | None = None) -> None:
    """Until GET `path` (a server's /ready, or a model's /{name}/ready) answers 200;
    `client` a client or a base URL. After `timeout`, AssertionError with the last answer
    — or what `explain` returns (e.g. the server's output)."""
    get = client.get if isinstance(client, httpx.Client) else (
        lambda p: httpx.get(f"{client}{p}", timeout=30))
    deadline = time.monotonic() + timeout
    while (answer := get(path)).status_code != 200:
        assert time.monotonic() < deadline, (
            f"GET {path} not 200 after {timeout}s: " + (explain() if explain else answer.text))
        time.sleep(0.05)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of a server-sent-event stream as they arrive (`data` parsed as
    JSON): what `POST /{name}/stream` sends — `progress` events, then `result` or `error`."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


class ServingConformance(BackendConformance):
    """`BackendConformance`, plus the backend served over real HTTP (tier 1)."""

    @pytest.fixture(scope="class")
    def served(self, backend_kwargs: dict[str, Any]) -> Iterator[httpx.Client]:
        spec = ModelSpec(name=SERVED_NAME, backend=self.backend_name,
                         backend_kwargs=backend_kwargs)
        with serving([spec]) as client:
            yield client

    def test_predict_over_http_answers_as_in_process(
            self, served: httpx.Client, loaded_backend: Backend[Any, Any],
            sample_requests: list[BaseModel]) -> None:
        for number, request in enumerate(sample_requests):
            answer = served.post(f"/{SERVED_NAME}/predict", content=request.model_dump_json(),
                                 headers={"content-type": "application/json",
                                          "x-request-id": f"conformance-{number}"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["request_id"] == f"conformance-{number}"
            assert body["model_name"] == SERVED_NAME
            expected = loaded_backend.predict([request])[0]
            self.assert_same(_payload(expected), _without_ids(body))

    def test_a_stream_over_http_ends_with_the_in_process_answer(
            self, served: httpx.Client, loaded_backend: Backend[Any, Any],
            sample_requests: list[BaseModel]) -> None:
        request = sample_requests[0]
        with served.stream("POST", f"/{SERVED_NAME}/stream",
                           content=request.model_dump_json(),
                           headers={"content-type": "application/json"}) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "result" and set(kinds[:-1]) <= {"progress"}, kinds
        expected = loaded_backend.predict([request])[0]
        self.assert_same(_payload(expected), _without_ids(events[-1][1]))

    def test_a_refusal_over_http_is_a_422_naming_the_field(
            self, served: httpx.Client,
            invalid_requests: list[tuple[BaseModel, str]]) -> None:
        for request, field in invalid_requests:
            answer = served.post(f"/{SERVED_NAME}/predict",
                                 content=request.model_dump_json(),
                                 headers={"content-type": "application/json"})
            assert answer.status_code == 422, answer.text
            fields = [d["field"] for d in answer.json()["details"]]
            assert any(f == field or f.startswith(f"{field}.") for f in fields), fields


def _payload(response: BaseModel) -> Any:
    return response.model_dump(mode="json", exclude={"request_id", "model_name"})


def _without_ids(body: dict[str, Any]) -> dict[str, Any]:
    """An HTTP answer without what the server stamps (and SSE markers on stream events)."""
    return {k: v for k, v in body.items()
            if k not in ("request_id", "model_name", "type", "done")}
