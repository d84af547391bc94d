"""A real uvicorn server on 127.0.0.1 (port 0) in a thread, and test backends registered as
an in-process plugin through the same hooks as installed ones.

The backend is steered through files (gates, a switch for its delay), not objects, so the
same tests drive it in this process (tier 1) and in Ray replicas (other processes)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict

from sheaf_core import TimeSeriesRequest, TimeSeriesResponse, hookimpl
from sheaf_core.backend import ProgressEvent
from sheaf_core.builtin.baseline import BaselineForecaster
from sheaf_core.deadlines import check_deadline
from sheaf_server import testing

POISON = 666.0


class SlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_s: float = 0.0
    fast_after: str | None = None  # once this file exists, no more delay
    gate: str | None = None  # load() waits until this file exists
    fail_load: bool = False
    crash_load: bool = False  # load() kills its own process (a segfault, an OOM kill)
    bias: float = 0.0  # added to every forecast: tells which version of a model answered
    stream_steps: int = 0  # stream(): this many progress events before the result
    step_delay_s: float = 0.0  # ... each after this long
    step_log: str | None = None  # ... each appending a line to this file
    deterministic: bool = True  # False: like a sampler without a seed (never cached)
    use_covariates: bool = False  # accept covariates: future ones are added to the forecast
    work_steps: int = 0  # predict(): this many steps of step_delay_s first, checking the
    #                      deadline before each (like a model's autoregressive steps)


class ScriptedBackend(BaselineForecaster):
    """The baseline, plus: a poison value that raises, a per-batch delay, a gated or failing
    load, and a record of the batch sizes it saw."""

    Settings = SlowSettings
    supports_streaming = True

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.batch_sizes: list[int] = []

    def load(self) -> None:
        if self.settings.fail_load:
            raise RuntimeError("weights are corrupt")
        if self.settings.crash_load:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.settings.gate:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.settings.gate):
                assert time.monotonic() < deadline, "gate never opened"
                time.sleep(0.01)
        super().load()

    def validate_request(self, request: TimeSeriesRequest) -> None:
        if not self.settings.use_covariates:
            super().validate_request(request)

    def deterministic(self, request: TimeSeriesRequest) -> bool:
        return self.settings.deterministic

    def _season(self, request: TimeSeriesRequest) -> int:
        return 1

    def predict(self, requests: Sequence[TimeSeriesRequest]) -> list[TimeSeriesResponse]:
        self.batch_sizes.append(len(requests))
        fast = self.settings.fast_after and os.path.exists(self.settings.fast_after)
        if self.settings.delay_s and not fast:
            time.sleep(self.settings.delay_s)
        for step in range(self.settings.work_steps):
            check_deadline()
            time.sleep(self.settings.step_delay_s)
            if self.settings.step_log:
                with open(self.settings.step_log, "a") as log:
                    log.write(f"{step}\n")
        if any(POISON in r.target_series() for r in requests):
            raise RuntimeError("secret internal detail")
        responses = super().predict(requests)
        for request, response in zip(requests, responses, strict=True):
            future = [0.0] * request.horizon
            for values in (request.future_covariates or {}).values():
                future = [f + (v or 0.0) for f, v in zip(future, values, strict=True)]
            response.mean = [_shifted(value, self.settings.bias + f)
                             for value, f in zip(response.mean, future, strict=True)]
        return responses


    def stream(self, request: TimeSeriesRequest) -> Iterator[ProgressEvent | TimeSeriesResponse]:
        total = self.settings.stream_steps
        for step in range(1, total + 1):
            time.sleep(self.settings.step_delay_s)
            if self.settings.step_log:
                with open(self.settings.step_log, "a") as log:
                    log.write(f"{step}\n")
            yield ProgressEvent(step=step, total=total)
        yield self.predict([request])[0]


def _shifted(value: float | list[float], by: float) -> float | list[float]:
    """A forecast value (one variate, or a joint row) plus `by`."""
    return [v + by for v in value] if isinstance(value, list) else value + by


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent event stream (`sheaf_server.testing`)."""
    return list(testing.sse_events(response))


def steps_logged(path: str) -> int:
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


class ScriptedPlugin:
    __name__ = "server-tests"

    @hookimpl
    def sheaf_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("test", ScriptedBackend)


@contextmanager
def serving(app: object, wait_ready: bool = True) -> Iterator[httpx.Client]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                          timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20)
    try:
        if wait_ready:
            for _ in range(400):
                if client.get("/ready").status_code == 200:
                    break
                time.sleep(0.01)
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(20)
