"""The chronos backend on tiny Chronos, Chronos-Bolt and Chronos-2 models built and saved here,
loaded through chronos-forecasting's real `BaseChronosPipeline.from_pretrained`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sheaf_backend_chronos.backend import ChronosBackend
from sheaf_backend_chronos.testing import save_tiny_bolt, save_tiny_chronos, save_tiny_chronos2
from sheaf_core import InvalidRequest, ModelSpec, TimeSeriesRequest
from sheaf_core.testing import BackendConformance


def series(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [10 + 3 * ((i % 12) / 12) + rng.gauss(0, 1) for i in range(n)]


@pytest.fixture(scope="module")
def bolt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bolt(tmp_path_factory.mktemp("bolt"))


def test_bolt_answers_are_deterministic_so_they_may_be_cached(bolt_dir: Path) -> None:
    backend = ChronosBackend(model_id=str(bolt_dir))
    backend.load()
    request = TimeSeriesRequest(history=series(40, 1), horizon=5)
    assert backend.deterministic(request)
    assert backend.predict([request])[0] == backend.predict([request])[0]


@pytest.fixture(scope="module")
def chronos2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_chronos2(tmp_path_factory.mktemp("chronos2"))


@pytest.fixture(scope="module")
def bolt(bolt_dir: Path) -> ChronosBackend:
    backend = ChronosBackend(model_id=str(bolt_dir))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def chronos2(chronos2_dir: Path) -> ChronosBackend:
    backend = ChronosBackend(model_id=str(chronos2_dir))
    backend.load()
    return backend


MIXED = [  # different horizons (some beyond the model's 16), lengths and levels
    dict(history=series(40, 1), horizon=3, output_mode="quantiles", quantile_levels=[0.5]),
    dict(history=series(150, 2), horizon=16, output_mode="quantiles",
         quantile_levels=[0.15, 0.9]),
    dict(history=series(9, 3), horizon=8),
    dict(history=series(64, 4), horizon=24, output_mode="quantiles",
         quantile_levels=[0.1, 0.25, 0.75]),
]


class TestBoltConformance(BackendConformance):
    backend_name = "chronos"
    rtol = atol = 2e-3  # left-padding to the batch's longest history moves float noise

    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict:
        return {"model_id": str(save_tiny_bolt(tmp_path_factory.mktemp("bolt-c")))}

    @pytest.fixture
    def sample_requests(self) -> list[TimeSeriesRequest]:
        return [TimeSeriesRequest(**kwargs) for kwargs in MIXED]

    @pytest.fixture
    def invalid_requests(self) -> list[tuple[TimeSeriesRequest, str]]:
        return [(TimeSeriesRequest(history=[1, 2], horizon=1, output_mode="quantiles",
                                   quantile_levels=[0.001, 0.5]), "quantile_levels")]


class TestChronos2Conformance(TestBoltConformance):
    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict:
        return {"model_id": str(save_tiny_chronos2(tmp_path_factory.mktemp("c2-c")))}

    @pytest.fixture
    def sample_requests(self) -> list[TimeSeriesRequest]:
        multivariate = [[a, b] for a, b in zip(series(30, 5), series(30, 6), strict=True)]
        return [TimeSeriesRequest(**kwargs) for kwargs in MIXED] + [
            TimeSeriesRequest(history=multivariate, target_index=None, horizon=5,
                              output_mode="quantiles", quantile_levels=[0.2, 0.8]),
            TimeSeriesRequest(history=series(30, 7), horizon=4,
                              past_covariates={"temp": series(30, 8)},
                              future_covariates={"temp": series(4, 9)}),
        ]


def test_loads_through_base_chronos_pipeline(bolt: ChronosBackend,
                                             chronos2: ChronosBackend) -> None:
    from chronos import Chronos2Pipeline, ChronosBoltPipeline

    assert isinstance(bolt.pipeline, ChronosBoltPipeline) and bolt.kind == "chronos-bolt"
    assert isinstance(chronos2.pipeline, Chronos2Pipeline) and chronos2.kind == "chronos-2"


def test_a_mixed_batch_is_one_pipeline_call_giving_each_request_its_own_answer(
        bolt: ChronosBackend) -> None:
    requests = [TimeSeriesRequest(**kwargs) for kwargs in MIXED]
    calls = []
    original = bolt.pipeline.predict

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["prediction_length"])
        return original(*args, **kwargs)

    bolt.pipeline.predict = counting
    try:
        batch = bolt.predict(requests)
    finally:
        bolt.pipeline.predict = original
    assert calls == [24]
    for request, answer in zip(requests, batch, strict=True):
        assert len(answer.mean) == request.horizon
        if request.output_mode == "quantiles":
            assert list(answer.quantiles) == [repr(q) for q in request.quantile_levels]
            assert all(len(v) == request.horizon for v in answer.quantiles.values())


def test_a_level_between_the_model_levels_is_interpolated_from_its_neighbours(
        bolt: ChronosBackend) -> None:
    history = series(60, 11)
    levels = [0.1, 0.2, 0.15, 0.5]
    answer = bolt.predict([TimeSeriesRequest(history=history, horizon=6,
                                             output_mode="quantiles",
                                             quantile_levels=levels)])[0]
    q = answer.quantiles
    for low, mid, high in zip(q["0.1"], q["0.15"], q["0.2"], strict=True):
        assert mid == pytest.approx((low + high) / 2, rel=1e-5)
    assert answer.mean == pytest.approx(q["0.5"])  # Bolt's mean is its median


def test_levels_outside_the_model_range_are_a_field_error(bolt: ChronosBackend) -> None:
    with pytest.raises(InvalidRequest) as info:
        bolt.validate_request(TimeSeriesRequest(history=[1, 2], horizon=1,
                                                output_mode="quantiles",
                                                quantile_levels=[0.05, 0.5]))
    assert info.value.problems[0].field == "quantile_levels"
    assert "0.05" in info.value.problems[0].message


@pytest.mark.parametrize("kwargs, field", [
    ({"output_mode": "samples"}, "output_mode"),
    ({"history": [[1, 2], [3, 4]], "target_index": None}, "target_index"),
    ({"past_covariates": {"t": [1, 2]}}, "past_covariates"),
])
def test_bolt_refuses_what_it_cannot_do(bolt: ChronosBackend, kwargs: dict,
                                        field: str) -> None:
    request = TimeSeriesRequest(**{"history": [1.0, 2.0], "horizon": 2, **kwargs})
    with pytest.raises(InvalidRequest) as info:
        bolt.validate_request(request)
    assert info.value.problems[0].field == field


def test_chronos2_joint_multivariate_is_time_major(chronos2: ChronosBackend) -> None:
    history = [[a, b, c] for a, b, c in zip(series(40, 1), series(40, 2), series(40, 3),
                                            strict=True)]
    answer = chronos2.predict([TimeSeriesRequest(history=history, target_index=None,
                                                 horizon=6, output_mode="quantiles")])[0]
    assert len(answer.mean) == 6 and all(len(step) == 3 for step in answer.mean)
    assert len(answer.quantiles["0.9"]) == 6 and len(answer.quantiles["0.9"][0]) == 3


def test_chronos2_uses_covariates(chronos2: ChronosBackend) -> None:
    base = dict(history=series(48, 1), horizon=8, past_covariates={"x": series(48, 2)})
    with_future = chronos2.predict([TimeSeriesRequest(
        **base, future_covariates={"x": [100.0] * 8})])[0]
    without = chronos2.predict([TimeSeriesRequest(**base)])[0]
    assert with_future.mean != without.mean


def test_served_over_http(bolt_dir: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "server"))
    from server_support import serving

    from sheaf_server import build_app

    spec = ModelSpec(name="bolt", backend="chronos", backend_kwargs={"model_id": str(bolt_dir)})
    with serving(build_app([spec])) as client:
        assert client.get("/bolt/ready").status_code == 200
        response = client.post("/bolt/predict", json={
            "history": series(50, 1), "horizon": 4, "output_mode": "quantiles",
            "quantile_levels": [0.25, 0.75]})
        assert response.status_code == 200, response.text
        assert list(response.json()["quantiles"]) == ["0.25", "0.75"]
        refused = client.post("/bolt/predict", json={"history": [1, 2], "horizon": 1,
                                                     "output_mode": "samples"})
        assert refused.status_code == 422
        assert refused.json()["details"][0]["field"] == "output_mode"
        listing = client.get("/models/bolt").json()
        assert listing["details"]["family"] == "chronos-bolt"


def test_original_chronos_samples_once_per_batch_and_answers_every_mode(
        tmp_path: Path) -> None:
    from chronos import ChronosPipeline

    backend = ChronosBackend(model_id=str(save_tiny_chronos(tmp_path)), num_samples=20)
    backend.load()
    assert isinstance(backend.pipeline, ChronosPipeline) and backend.kind == "chronos"
    # it samples without a seed: its answers are never served from the response cache
    assert not backend.deterministic(TimeSeriesRequest(history=series(40, 1), horizon=5))
    requests = [
        TimeSeriesRequest(history=series(40, 1), horizon=5),
        TimeSeriesRequest(history=series(70, 2), horizon=16, output_mode="quantiles",
                          quantile_levels=[0.1, 0.5, 0.9]),
        TimeSeriesRequest(history=series(20, 3), horizon=8, output_mode="samples",
                          num_samples=30),
    ]
    calls = []
    original = backend.pipeline.predict

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((kwargs["prediction_length"], kwargs["num_samples"]))
        return original(*args, **kwargs)

    backend.pipeline.predict = counting
    mean, quantiles, samples = backend.predict(requests)
    assert calls == [(16, 30)]  # the longest horizon, the most draws any request needs
    assert len(mean.mean) == 5 and mean.quantiles is None and mean.samples is None
    q = quantiles.quantiles
    assert list(q) == ["0.1", "0.5", "0.9"] and all(len(v) == 16 for v in q.values())
    assert all(lo <= mid <= hi for lo, mid, hi in zip(q["0.1"], q["0.5"], q["0.9"],
                                                      strict=True))
    assert len(samples.samples) == 30 and all(len(path) == 8 for path in samples.samples)
    assert samples.mean == pytest.approx([sum(step) / 30 for step in zip(*samples.samples,
                                                                         strict=True)],
                                         rel=1e-4)


@pytest.mark.parametrize("save", [save_tiny_chronos, save_tiny_bolt, save_tiny_chronos2])
def test_a_forecast_stops_at_its_deadline_at_the_next_model_call(
        save: object, tmp_path: Path) -> None:
    """Every autoregressive chunk (Bolt, Chronos-2) or generated token (Chronos) calls the
    inner model; past the batch's deadline that call raises instead of computing on."""
    import time

    from sheaf_core.deadlines import DeadlinePassed, running_until

    backend = ChronosBackend(model_id=str(save(tmp_path / "m")))  # type: ignore[operator]
    backend.load()
    calls: list[int] = []
    backend.pipeline.inner_model.register_forward_pre_hook(lambda *_: calls.append(1))
    request = TimeSeriesRequest(history=series(40, 1), horizon=4096)
    with running_until(time.monotonic() - 1), pytest.raises(DeadlinePassed):
        backend.predict([request])
    assert calls == []  # stopped before the first model call
    with running_until(None):  # no deadline (offline jobs): the whole forecast
        assert len(backend.predict([request.model_copy(update={"horizon": 40})])[0].mean) == 40
