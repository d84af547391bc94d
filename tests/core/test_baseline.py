"""The weight-free baseline forecaster: conformance and the numbers it promises."""

from __future__ import annotations

import pytest

from sheaf_core import InvalidRequest, TimeSeriesRequest
from sheaf_core.builtin.baseline import BaselineForecaster
from sheaf_core.testing import BackendConformance


class TestBaselineConformance(BackendConformance):
    backend_name = "baseline"

    @pytest.fixture
    def sample_requests(self) -> list[TimeSeriesRequest]:
        return [
            TimeSeriesRequest(history=[1, 2, 3, 1, 2, 3, 1, 2], horizon=4),
            TimeSeriesRequest(history=[5, 6, 7, 8, 9] * 5, horizon=12, frequency="1d",
                              output_mode="quantiles", quantile_levels=[0.05, 0.5, 0.95]),
            TimeSeriesRequest(history=[[1, 2], [3, 4], [5, 6]], target_index=None, horizon=2,
                              output_mode="samples", num_samples=3),
        ]


def test_point_forecast_repeats_the_last_season() -> None:
    backend = BaselineForecaster(season_length=3)
    request = TimeSeriesRequest(history=[1, 2, 3, 4, 5, 6], horizon=5)
    assert backend.predict([request])[0].mean == [4, 5, 6, 4, 5]


def test_season_length_comes_from_the_frequency() -> None:
    history = [float(h % 24) for h in range(72)]
    response = BaselineForecaster().predict([TimeSeriesRequest(
        history=history, horizon=24, frequency="1h")])[0]
    assert response.mean == history[-24:]


def test_quantiles_are_ordered_and_widen_with_the_horizon() -> None:
    history = [10.0 + (i % 7) + (3 if i % 5 == 0 else 0) for i in range(70)]
    response = BaselineForecaster(season_length=7).predict([TimeSeriesRequest(
        history=history, horizon=14, output_mode="quantiles",
        quantile_levels=[0.1, 0.5, 0.9])])[0]
    low, mid, high = (response.quantiles[k] for k in ("0.1", "0.5", "0.9"))
    assert all(a <= b <= c for a, b, c in zip(low, mid, high, strict=True))
    assert high[13] - low[13] > high[0] - low[0]


def test_missing_values_are_filled_forward() -> None:
    response = BaselineForecaster().predict([TimeSeriesRequest(
        history=[1, 2, None], horizon=1)])[0]
    assert response.mean == [2]


def test_covariates_are_refused_not_ignored() -> None:
    with pytest.raises(InvalidRequest) as info:
        BaselineForecaster().validate_request(TimeSeriesRequest(
            history=[1, 2], horizon=1, past_covariates={"t": [1, 2]}))
    assert info.value.problems[0].field == "past_covariates"
