"""A weight-free seasonal-naive forecaster: the embedded default model.

Point forecast: the value one season earlier (``y[T - m + (i mod m)]``). Uncertainty: the
empirical distribution of past seasonal errors ``y[t] - y[t-m]``, widened by ``sqrt(k)`` for
the k-th season ahead. It needs no download, answers every output mode, and gives a real,
checkable forecast, which makes it the demo model and a sane benchmark floor.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.backend import Backend
from sheaf_core.contracts.time_series import (
    OutputMode,
    TimeSeriesRequest,
    TimeSeriesResponse,
    forecast_timestamps,
    magnitude_problem,
    quantile_key,
)
from sheaf_core.errors import FieldProblem, InvalidRequest

#: Seasonal errors double a value and the widest quantile widens them 64-fold: within
#: ±1e300 every forecast stays a finite float64.
MAX_ABS_VALUE = 1e300


class BaselineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    season_length: int | None = Field(
        default=None, ge=1, le=10_000,
        description="Steps per season; default: from the request's frequency (24 for hourly, "
        "7 for daily, 12 for monthly, ...), else 1 (plain naive).")


class BaselineForecaster(Backend[TimeSeriesRequest, TimeSeriesResponse]):
    """Seasonal naive with empirical quantiles; see the module docstring."""

    model_type = "time_series"
    Settings = BaselineSettings
    settings: BaselineSettings

    def validate_request(self, request: TimeSeriesRequest) -> None:
        problems = []
        if request.past_covariates or request.future_covariates:
            field = "past_covariates" if request.past_covariates else "future_covariates"
            problems.append(FieldProblem(field, "the baseline forecaster does not use "
                                         "covariates; send them to a Chronos-2 model"))
        too_large = magnitude_problem(request, MAX_ABS_VALUE, "float64")
        if too_large is not None:
            problems.append(too_large)
        if problems:
            raise InvalidRequest(problems)

    def warmup_requests(self) -> list[TimeSeriesRequest]:
        history: list[float | None] = [float(i % 7) for i in range(28)]
        return [TimeSeriesRequest(history=history, horizon=7, frequency="1d",
                                  output_mode=OutputMode.QUANTILES)]

    def predict(self, requests: Sequence[TimeSeriesRequest]) -> list[TimeSeriesResponse]:
        return [self._answer(request) for request in requests]

    def describe(self) -> dict[str, object]:
        return {"kind": "seasonal naive", "season_length": self.settings.season_length,
                "output_modes": [m.value for m in OutputMode]}

    def _season(self, request: TimeSeriesRequest) -> int:
        if self.settings.season_length is not None:
            return self.settings.season_length
        freq = request.parsed_frequency
        return freq.season_length if freq else 1

    def _answer(self, request: TimeSeriesRequest) -> TimeSeriesResponse:
        season = self._season(request)
        series = request.variates() if request.joint else [request.target_series()]
        rng = random.Random(_seed(request))
        forecasts = [_forecast(y, request, season, rng) for y in series]
        means = [f[0] for f in forecasts]
        mode = request.output_mode
        quantiles = None
        samples: Any = None  # per sample: a path, or variate-major paths (joint)
        if mode is OutputMode.QUANTILES:
            quantiles = {quantile_key(q): _shape([f[1][j] for f in forecasts], request.joint)
                         for j, q in enumerate(request.quantile_levels)}
        elif mode is OutputMode.SAMPLES:
            per_sample = [[f[2][s] for f in forecasts] for s in range(request.num_samples)]
            samples = [_shape(paths, request.joint) for paths in per_sample]
        return TimeSeriesResponse(
            horizon=request.horizon, frequency=request.frequency, output_mode=mode,
            mean=_shape(means, request.joint), quantiles=quantiles, samples=samples,
            timestamps=forecast_timestamps(request),
        )


def _shape(per_variate: list[list[float]], joint: bool) -> list[float] | list[list[float]]:
    """One variate → `[h]`; joint → time-major `[h][v]`."""
    if not joint:
        return per_variate[0]
    return [list(step) for step in zip(*per_variate, strict=True)]


def _seed(request: TimeSeriesRequest) -> int:
    """Samples depend only on the request, so a request answers alike alone or in a batch."""
    digest = hashlib.blake2b(request.model_dump_json(exclude={"request_id", "model_name"})
                             .encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _forecast(y: list[float], request: TimeSeriesRequest, season: int,
              rng: random.Random) -> tuple[list[float], list[list[float]], list[list[float]]]:
    """(point[h], quantiles[level][h], samples[s][h]) for one series."""
    values = _fill_forward(y)
    n, h = len(values), request.horizon
    m = season if n > season else 1
    point = [values[n - m + (i % m)] for i in range(h)]
    errors = sorted(values[t] - values[t - m] for t in range(m, n))
    widen = [math.sqrt(i // m + 1) for i in range(h)]
    quantiles: list[list[float]] = []
    samples: list[list[float]] = []
    if request.output_mode is OutputMode.QUANTILES:
        for q in request.quantile_levels:
            offset = _empirical_quantile(errors, q)
            quantiles.append([p + offset * w for p, w in zip(point, widen, strict=True)])
    elif request.output_mode is OutputMode.SAMPLES:
        for _ in range(request.num_samples):
            samples.append([p + (rng.choice(errors) if errors else 0.0) * w
                            for p, w in zip(point, widen, strict=True)])
    return point, quantiles, samples


def _fill_forward(y: list[float]) -> list[float]:
    out: list[float] = []
    last = math.nan
    for x in y:
        if not math.isnan(x):
            last = x
        if not math.isnan(last):
            out.append(last)
    return out


def _empirical_quantile(sorted_errors: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method); 0 without errors."""
    if not sorted_errors:
        return 0.0
    position = q * (len(sorted_errors) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_errors) - 1)
    frac = position - low
    return sorted_errors[low] * (1 - frac) + sorted_errors[high] * frac
