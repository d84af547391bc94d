"""Hot swap (`ModelServer.update`): a model's backend is replaced while clients keep
sending, on both hosts, and not one request fails. The test backend adds `bias` to every
forecast, so each answer tells which version served it; its load waits on a gate file, so
the test holds the new version in loading as long as it likes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hosts import Flag, Host

from sheaf_core import BatchingPolicy, ConfigError, UpdateFailed
from sheaf_server.settings import ServedModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 2}
V1_MEAN = 4.0  # the baseline repeats the last value


@dataclass
class Answer:
    sent: float
    status: int
    mean: float | None


@dataclass
class Traffic:
    """Clients posting back to back until stopped; every answer is kept."""

    url: str
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = client.post("/m/predict", json=BODY)
                mean = response.json()["mean"][0] if response.status_code == 200 else None
                self.answers.append(Answer(sent, response.status_code, mean))

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.01)


def test_an_update_under_load_loses_nothing_and_new_requests_get_the_new_model(
        host: Host, flag: Flag) -> None:
    # Two replicas on Ray: Serve updates one at a time, and the other one keeps answering.
    v1 = ServedModelSpec(name="m", backend="test", batching={"max_batch_size": 8, "max_wait_ms": 2},
                   resources={"num_cpus": 0.5}, ray={"num_replicas": 2})
    gate = flag("v2-may-load")
    v2 = v1.model_copy(update={"backend_kwargs": {"bias": 100.0, "gate": gate}})
    with host.serve(v1) as client, Traffic(str(client.base_url)) as traffic:
        traffic.wait_for(20)
        assert host.server is not None
        update = threading.Thread(target=host.server.update, args=(v2,))
        update.start()
        time.sleep(0.5)
        during = len(traffic.answers)
        time.sleep(0.5)
        assert len(traffic.answers) > during, "nothing was answered while v2 was loading"
        assert update.is_alive(), "update returned before v2 could load"
        Path(gate).touch()
        update.join(120)
        assert not update.is_alive()
        updated = time.monotonic()
        traffic.wait_for(len(traffic.answers) + 20)

    assert [a for a in traffic.answers if a.status != 200] == []
    means = {a.mean for a in traffic.answers}
    assert means == {V1_MEAN, V1_MEAN + 100}
    after = [a.mean for a in traffic.answers if a.sent > updated]
    assert after and set(after) == {V1_MEAN + 100}, "a request sent after update() got v1"


def test_an_update_shows_in_the_model_description(host: Host) -> None:
    v1 = ServedModelSpec(name="m", backend="test", resources={"num_cpus": 0.5})
    v2 = v1.model_copy(update={"backend_kwargs": {"bias": 1.0}, "timeout_s": 7.0,
                               "batching": BatchingPolicy(max_batch_size=3)})
    with host.serve(v1) as client:
        assert host.server is not None
        host.server.update(v2)
        info = client.get("/models/m").json()
        assert info["generation"] == 1 and info["timeout_s"] == 7.0
        assert info["batching"]["max_batch_size"] == 3
        assert client.post("/m/predict", json=BODY).json()["mean"][0] == V1_MEAN + 1
        assert host.server.config.models[0] == v2


def test_an_update_that_fails_to_load_keeps_the_previous_model_serving(host: Host) -> None:
    v1 = ServedModelSpec(name="m", backend="test", resources={"num_cpus": 0.5})
    broken = v1.model_copy(update={"backend_kwargs": {"fail_load": True}})
    with host.serve(v1) as client:
        assert host.server is not None
        with pytest.raises(UpdateFailed, match="weights are corrupt"):
            host.server.update(broken)
        response = client.post("/m/predict", json=BODY)
        assert response.status_code == 200 and response.json()["mean"][0] == V1_MEAN
        assert host.server.config.models[0] == v1


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "other"}, "no such model"),
    ({"backend_kwargs": {"delay": 1}}, "backend_kwargs"),
])
def test_an_update_with_a_bad_spec_is_refused_before_anything_changes(
        host: Host, change: dict[str, object], message: str) -> None:
    v1 = ServedModelSpec(name="m", backend="test", resources={"num_cpus": 0.5})
    with host.serve(v1) as client:
        assert host.server is not None
        with pytest.raises(ConfigError, match=message):
            host.server.update(v1.model_copy(update=change))
        assert client.post("/m/predict", json=BODY).status_code == 200
