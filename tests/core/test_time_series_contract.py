"""The time_series contract: sheaf-serve compatibility, bounds, and errors that name fields."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from sheaf_core import TimeSeriesRequest
from sheaf_core.contracts.frequency import parse_frequency
from sheaf_core.contracts.time_series import MAX_HORIZON, MAX_SAMPLES, forecast_timestamps


def fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"] if "[" not in str(p)) for e in exc.errors()}


def test_a_sheaf_serve_request_validates_unchanged() -> None:
    body = {"request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "model_type": "time_series",
            "model_name": "chronos", "history": [1.0, 2.0, 3.0], "horizon": 4,
            "frequency": "1h", "output_mode": "quantiles", "quantile_levels": [0.1, 0.9],
            "num_samples": 20}
    request = TimeSeriesRequest.model_validate(body)
    assert request.horizon == 4 and request.quantile_levels == [0.1, 0.9]


@pytest.mark.parametrize("freq", ["1min", "5min", "15min", "1h", "1d", "1W", "1M", "H", "MS"])
def test_sheaf_serve_and_pandas_frequencies_are_accepted(freq: str) -> None:
    TimeSeriesRequest(history=[1.0], horizon=1, frequency=freq)


def test_model_type_is_optional_and_checked_when_given() -> None:
    assert TimeSeriesRequest(history=[1.0], horizon=1).model_type == "time_series"
    with pytest.raises(ValidationError) as info:
        TimeSeriesRequest.model_validate({"model_type": "weather", "history": [1], "horizon": 1})
    assert fields(info.value) == {"model_type"}


@pytest.mark.parametrize("patch, field", [
    ({"horizon": 0}, "horizon"),
    ({"horizon": MAX_HORIZON + 1}, "horizon"),
    ({"num_samples": MAX_SAMPLES + 1}, "num_samples"),
    ({"quantile_levels": [0.0]}, "quantile_levels.0"),
    ({"quantile_levels": [0.5, 0.5]}, "quantile_levels"),
    ({"quantile_levels": []}, "quantile_levels"),
    ({"history": []}, "history"),
    ({"history": [1, "x"]}, "history.1"),
    ({"frequency": "fortnightly"}, "frequency"),
    ({"start": "2024-01-01T00:00:00"}, "frequency"),
    ({"colour": "red"}, "colour"),
    ({"frequency": "999999999999W"}, "frequency"),  # once an OverflowError (500)
    ({"frequency": "1d", "start": "9999-12-30"}, "start"),  # once a date out of range
    ({"target_index": 3}, "target_index"),  # univariate: once an IndexError in Chronos-2
    ({"history": [1.0, float("inf")]}, "history.1"),
    ({"history": [float("nan"), 1.0]}, "history.0"),
    ({"history": [None, None]}, "history"),
    ({"history": [[1.0, None], [2.0, None]], "target_index": None}, "history"),
    ({"history": [[None, 1.0], [None, 2.0]]}, "history"),
])
def test_invalid_fields_are_named(patch: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TimeSeriesRequest.model_validate({"history": [1.0, 2.0], "horizon": 2, **patch})
    assert field in fields(info.value)


def test_json_infinity_and_nan_are_refused_naming_the_value() -> None:
    """Python's JSON reader takes `Infinity` and `NaN`; a forecast of them would be
    `null` where the response promises numbers."""
    for token in ("Infinity", "-Infinity", "NaN"):
        with pytest.raises(ValidationError) as info:
            TimeSeriesRequest.model_validate_json(
                f'{{"history": [1, 2, {token}, 4], "horizon": 2}}')
        assert fields(info.value) == {"history.2"}


def test_missing_values_are_fine_while_a_series_has_an_observed_one() -> None:
    TimeSeriesRequest(history=[None, 1.0, None], horizon=1)
    TimeSeriesRequest(history=[[1.0, None], [2.0, None]], horizon=1, target_index=0)


def test_the_longest_frequency_step_is_a_century() -> None:
    assert parse_frequency("100Y").months == 1200
    with pytest.raises(ValueError, match="more than a century"):
        parse_frequency("101Y")


def test_multivariate_history_is_time_major_and_checked() -> None:
    request = TimeSeriesRequest(history=[[1, 10], [2, None], [3, 30]], horizon=1,
                                target_index=1)
    assert request.n_variates == 2
    assert request.variates()[0] == [1, 2, 3]
    assert request.target_series()[0] == 10
    with pytest.raises(ValidationError) as info:
        TimeSeriesRequest(history=[[1, 2], [3]], horizon=1)
    assert "history.1" in fields(info.value)
    with pytest.raises(ValidationError) as info:
        TimeSeriesRequest(history=[[1, 2]], horizon=1, target_index=2)
    assert "target_index" in fields(info.value)


def test_covariate_lengths_are_checked_against_history_and_horizon() -> None:
    with pytest.raises(ValidationError) as info:
        TimeSeriesRequest(history=[1, 2, 3], horizon=2, past_covariates={"temp": [1, 2]},
                          future_covariates={"temp": [1], "promo": [0, 1]})
    assert fields(info.value) == {"past_covariates.temp", "future_covariates.temp",
                                  "future_covariates.promo"}


def test_timestamps_follow_the_history() -> None:
    request = TimeSeriesRequest(history=[1, 2, 3], horizon=2, frequency="1M",
                                start=datetime(2024, 1, 31))
    assert forecast_timestamps(request) == [datetime(2024, 4, 30), datetime(2024, 5, 31)]
    hourly = TimeSeriesRequest(history=[1], horizon=1, frequency="15min",
                               start=datetime(2024, 1, 1))
    assert forecast_timestamps(hourly) == [datetime(2024, 1, 1, 0, 15)]


def test_season_lengths() -> None:
    assert parse_frequency("1h").season_length == 24
    assert parse_frequency("1d").season_length == 7
    assert parse_frequency("MS").season_length == 12
