"""The graphcast backend on a tiny GraphCastNet built and saved here, loaded through
PhysicsNeMo's real `Module.from_checkpoint`, alone and behind a real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from image_support import serving, sse_events

from sheaf_backend_graphcast.backend import GraphCastBackend
from sheaf_backend_graphcast.testing import (
    ATMOSPHERIC,
    FORCINGS,
    GRID,
    LEVELS,
    NORMALIZATION,
    SURFACE,
    sample_request,
    save_tiny_graphcast,
)
from sheaf_core import InvalidRequest, ModelSpec
from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import WeatherRequest
from sheaf_core.testing import BackendConformance

INIT = datetime(2026, 1, 1, 6)


def weather_body(n_steps: int = 3, seed: int = 0, grid: tuple[int, int] = GRID,
                 **overrides: Any) -> dict[str, Any]:
    return {**sample_request(INIT, n_steps, seed=seed, grid=grid), **overrides}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return save_tiny_graphcast(tmp_path_factory.mktemp("graphcast"))


@pytest.fixture(scope="module")
def graphcast(tiny: dict[str, Any]) -> GraphCastBackend:
    backend = GraphCastBackend(**tiny)
    backend.load()
    return backend


class TestGraphCastConformance(BackendConformance):
    backend_name = "graphcast"

    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return save_tiny_graphcast(tmp_path_factory.mktemp("graphcast"))

    @pytest.fixture
    def sample_requests(self) -> list[WeatherRequest]:
        return [WeatherRequest.model_validate(weather_body(n_steps=2, seed=1)),
                WeatherRequest.model_validate(weather_body(n_steps=1, seed=2))]

    def assert_same(self, a: Any, b: Any, where: str = "response") -> None:
        if isinstance(a, dict) and "data_b64" in a:  # compare arrays as numbers
            x, y = (EncodedArray.model_validate(v).to_numpy() for v in (a, b))
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-3, err_msg=where)
            return
        super().assert_same(a, b, where)


def test_a_rollout_equals_calling_the_model_step_by_step(graphcast: GraphCastBackend,
                                                         tiny: dict[str, Any]) -> None:
    """The reference: PhysicsNeMo's model called by hand, each output fed back."""
    import physicsnemo
    import torch

    request = WeatherRequest.model_validate(weather_body(n_steps=3))
    model = physicsnemo.Module.from_checkpoint(tiny["checkpoint"]).eval()
    mean = {k: v["mean"] for k, v in NORMALIZATION.items()}
    std = {k: v["std"] for k, v in NORMALIZATION.items()}
    keys = SURFACE + [f"{n}@{lv:g}" for n in ATMOSPHERIC for lv in LEVELS]
    increments = np.array([tiny["increment_normalization"][k]["std"] for k in keys])

    def planes(state: Any) -> np.ndarray:
        atmospheric = [state.atmospheric[n].to_numpy()[i] for n in ATMOSPHERIC
                       for i in range(len(LEVELS))]
        return np.stack([state.surface[n].to_numpy() for n in SURFACE] + atmospheric)

    def normalised(values: np.ndarray, names: list[str]) -> np.ndarray:
        return (values - np.array([mean[k] for k in names])[:, None, None]) / \
            np.array([std[k] for k in names])[:, None, None]

    states = [planes(s) for s in request.states]
    lsm = request.forcings["lsm"].to_numpy()
    toa = request.forcings["toa"].to_numpy()
    expected = []
    for k in range(3):
        x = np.concatenate([normalised(states[-2], keys), normalised(states[-1], keys),
                            normalised(np.stack([lsm, toa[k]]), FORCINGS)])
        with torch.inference_mode():
            out = model(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
        states.append(states[-1] + out * increments[:, None, None])
        expected.append(states[-1])

    response = graphcast.predict([request])[0]
    assert [s.valid_time for s in response.steps] == [INIT + timedelta(hours=6 * k)
                                                      for k in (1, 2, 3)]
    for step, wanted in zip(response.steps, expected, strict=True):
        np.testing.assert_allclose(planes(step), wanted, rtol=1e-5, atol=1e-2)


def test_requests_the_model_cannot_answer_name_the_field(graphcast: GraphCastBackend) -> None:
    body = weather_body(n_steps=1)
    one_state = {**body, "states": body["states"][1:]}
    del body["forcings"]["lsm"]
    for bad, field_at_fault in ((one_state, "states"), (body, "forcings.lsm")):
        with pytest.raises(InvalidRequest) as info:
            graphcast.validate_request(WeatherRequest.model_validate(bad))
        assert field_at_fault in [p.field for p in info.value.problems]


def test_a_channel_map_that_does_not_fit_the_checkpoint_fails_at_load(
        tiny: dict[str, Any]) -> None:
    backend = GraphCastBackend(**{**tiny, "forcings": ["lsm"]})
    with pytest.raises(ValueError, match="13 input"):
        backend.load()


# -- behind a real server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tiny: dict[str, Any]) -> Iterator[httpx.Client]:
    with serving(ModelSpec(name="weather", backend="graphcast", backend_kwargs=tiny)) as client:
        yield client


def test_predict_over_http(server: httpx.Client) -> None:
    response = server.post("/weather/predict", json=weather_body(n_steps=2),
                           headers={"X-Request-ID": "wx-1"})
    assert response.status_code == 200, response.text[:500]
    answer = response.json()
    assert answer["request_id"] == "wx-1" and len(answer["steps"]) == 2
    assert answer["steps"][0]["atmospheric"]["t"]["shape"] == [len(LEVELS), *GRID]


def test_a_grid_the_model_was_not_built_for_is_a_422_naming_it(server: httpx.Client) -> None:
    response = server.post("/weather/predict", json=weather_body(n_steps=1, grid=(16, 32)))
    assert response.status_code == 422
    details = response.json()["details"]
    assert [d["field"] for d in details] == ["grid"] and "32x64" in details[0]["message"]


def test_arrays_that_do_not_fit_the_grid_are_a_422_naming_them(server: httpx.Client) -> None:
    body = weather_body(n_steps=1)
    body["grid"]["lat"] = body["grid"]["lat"][:-1]
    response = server.post("/weather/predict", json=body)
    assert response.status_code == 422
    assert "states.0.surface.t2m" in {d["field"] for d in response.json()["details"]}


def test_stream_sends_each_step_as_it_is_computed(server: httpx.Client) -> None:
    body = weather_body(n_steps=3)
    with server.stream("POST", "/weather/stream", json=body) as response:
        events = list(sse_events(response))
    assert [kind for kind, _ in events] == ["progress"] * 3 + ["result"]
    assert [d["forecast"]["step"] for _, d in events[:3]] == [1, 2, 3]
    result = events[-1][1]
    for (_, event), step in zip(events[:3], result["steps"], strict=True):
        assert event["forecast"] == step


def test_a_rollout_stops_at_its_deadline_between_steps(graphcast: GraphCastBackend) -> None:
    import time

    from sheaf_core.deadlines import DeadlinePassed, running_until

    request = WeatherRequest.model_validate(weather_body(n_steps=3, seed=1))
    with running_until(time.monotonic() - 1), pytest.raises(DeadlinePassed):
        graphcast.predict([request])
