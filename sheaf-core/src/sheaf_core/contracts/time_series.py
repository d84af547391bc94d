"""The `time_series` contract: forecast a horizon from a history.

Compatible with sheaf-serve's TimeSeriesRequest: the same field names (history, horizon,
frequency, output_mode, quantile_levels, num_samples, target_index) and defaults. Multivariate
history is time-major, `[[v0, v1, ...], ...]` one row per time step, as in sheaf-serve.
`target_index` picks the variate to forecast (default 0, as before); `null` forecasts every
variate jointly (backends that can, e.g. Chronos-2). Missing values are `null`.

Response arrays follow the request's shape: univariate → `mean[h]`, `quantiles[level][h]`,
`samples[s][h]`; joint multivariate → one more, innermost, variate axis (`mean[h][v]`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from sheaf_core.contracts._validation import field_errors
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.features import FeatureName, FeatureReference, Location
from sheaf_core.contracts.frequency import Frequency, parse_frequency
from sheaf_core.contracts.limits import WorkLimits, over_limit
from sheaf_core.errors import FieldProblem

MAX_HISTORY_LENGTH = 100_000
MAX_VARIATES = 256
MAX_HORIZON = 4096
MAX_QUANTILE_LEVELS = 99
MAX_SAMPLES = 1000
MAX_COVARIATES = 64
#: Forecast values one request may ask for by default (see `TimeSeriesLimits`).
DEFAULT_MAX_FORECAST_VALUES = 409_600

Value = float | None
Series = Annotated[list[Value], Field(min_length=1, max_length=MAX_HISTORY_LENGTH)]
Row = Annotated[list[Value], Field(min_length=1, max_length=MAX_VARIATES)]
Rows = Annotated[list[Row], Field(min_length=1, max_length=MAX_HISTORY_LENGTH)]


def _history_kind(value: object) -> str:
    """Validate only the branch the input looks like, so errors name the real problem.
    (Tags are bracketed: hosts drop bracketed parts from error locations.)"""
    if isinstance(value, list) and value and isinstance(value[0], list | tuple):
        return "[multivariate]"
    return "[univariate]"


History = Annotated[
    Annotated[Series, Tag("[univariate]")] | Annotated[Rows, Tag("[multivariate]")],
    Discriminator(_history_kind),
]
CovariateName = Annotated[str, Field(min_length=1, max_length=128)]


class OutputMode(StrEnum):
    """What the forecast contains besides the mean."""

    MEAN = "mean"
    QUANTILES = "quantiles"
    SAMPLES = "samples"


def _check_frequency(text: str | None) -> str | None:
    if text is not None:
        parse_frequency(text)
    return text


class SeriesFeatures(FeatureReference):
    """Which features of the feature view hold a time-series request's data. Each is an
    Array feature holding a whole series (the store keeps the latest window per entity)."""

    target: list[FeatureName] = Field(
        min_length=1, max_length=MAX_VARIATES,
        description="The features holding the history: one → univariate; several → a "
        "multivariate history, one variate per feature in this order (`target_index` picks "
        "the one to forecast).")
    past_covariates: list[FeatureName] = Field(
        default_factory=list, max_length=MAX_COVARIATES,
        description="Features holding covariates over the history (named as the feature).")
    future_covariates: dict[CovariateName, FeatureName] = Field(
        default_factory=dict, max_length=MAX_COVARIATES,
        description="A past covariate (named as its feature) → the feature holding its "
        "known values over the horizon.")

    @model_validator(mode="after")
    def _future_has_past(self) -> SeriesFeatures:
        field_errors(type(self).__name__, [
            (("future_covariates", name), "must also be listed in past_covariates (its "
             "values over the history)", name)
            for name in self.future_covariates if name not in self.past_covariates])
        return self

    def features(self) -> list[tuple[Location, str]]:
        return ([(("features", "target", i), name) for i, name in enumerate(self.target)]
                + [(("features", "past_covariates", i), name)
                   for i, name in enumerate(self.past_covariates)]
                + [(("features", "future_covariates", covariate), name)
                   for covariate, name in self.future_covariates.items()])


class SheafServeFeatureRef(BaseModel):
    """sheaf-serve's `feature_ref`: one feature holding the whole history. Read as
    `features: {feature_view, entity: {entity_key: entity_value}, target: [feature_name]}`."""

    model_config = ConfigDict(extra="forbid")

    feature_view: FeatureName
    feature_name: FeatureName
    entity_key: FeatureName
    entity_value: str | int

    def as_features(self) -> SeriesFeatures:
        return SeriesFeatures(feature_view=self.feature_view,
                              entity={self.entity_key: self.entity_value},
                              target=[self.feature_name])


class TimeSeriesLimits(WorkLimits):
    """What one forecast may ask for. A forecast's work — and its answer's size — grows
    with horizon x sample paths x series forecast; `max_forecast_values` bounds that
    product (by default 4096 steps of 100 paths), the others each factor."""

    max_horizon: int = Field(default=MAX_HORIZON, ge=1, le=MAX_HORIZON)
    max_num_samples: int = Field(default=MAX_SAMPLES, ge=1, le=MAX_SAMPLES)
    max_history: int = Field(default=MAX_HISTORY_LENGTH, ge=1, le=MAX_HISTORY_LENGTH,
                             description="Time steps of history.")
    max_forecast_values: int = Field(
        default=DEFAULT_MAX_FORECAST_VALUES, ge=1,
        description="horizon x paths (num_samples in samples mode, else 1) x variates "
        "forecast (all of them for a joint forecast, else 1).")

    def problems(self, request: TimeSeriesRequest) -> list[FieldProblem]:
        found = []
        if request.horizon > self.max_horizon:
            found.append(over_limit("horizon", request.horizon, self.max_horizon,
                                    "max_horizon"))
        paths = request.num_samples if request.output_mode is OutputMode.SAMPLES else 1
        if paths > self.max_num_samples:
            found.append(over_limit("num_samples", paths, self.max_num_samples,
                                    "max_num_samples"))
        length = len(request.history or ())
        if length > self.max_history:
            found.append(over_limit("history", f"{length} steps long", self.max_history,
                                    "max_history"))
        values = request.horizon * paths * (request.n_variates if request.joint else 1)
        if values > self.max_forecast_values:
            found.append(over_limit(
                "horizon", request.horizon, f"{self.max_forecast_values} forecast values",
                "max_forecast_values", f" (x {paths} paths x "
                f"{request.n_variates if request.joint else 1} series = {values} values)"))
        return found


class TimeSeriesRequest(BaseRequest):
    """Forecast `horizon` steps after `history`."""

    model_type: Literal["time_series"] = "time_series"
    Limits: ClassVar[type[WorkLimits]] = TimeSeriesLimits

    history: History | None = Field(
        default=None, description="Univariate `[x0, x1, ...]` or time-major multivariate "
        "`[[x0_v0, x0_v1], ...]`; `null` marks a missing value. Required unless `features` "
        "names it in the model's feature store.")
    features: SeriesFeatures | None = Field(
        default=None, description="Instead of `history`: where the history (and covariates) "
        "live in the model's Feast feature store; the server reads them (docs/feast.md).")
    feature_ref: SheafServeFeatureRef | None = Field(
        default=None, description="sheaf-serve's form of `features` (one feature holding "
        "the history), accepted for its clients; `null` is ignored.")
    target_index: int | None = Field(
        default=0, ge=0, lt=MAX_VARIATES,
        description="Multivariate only: the variate to forecast (the others inform it, where "
        "the backend can use them). `null` forecasts every variate jointly.",
    )
    horizon: int = Field(gt=0, le=MAX_HORIZON, description="Steps to forecast.")
    frequency: Annotated[str | None, AfterValidator(_check_frequency)] = Field(
        default=None, max_length=16,
        description="Sampling frequency, e.g. '15min', '1h', '1d', '1W', '1M'. With `start`, "
        "the response carries timestamps.",
    )
    start: datetime | None = Field(
        default=None, description="Timestamp of the first history point (needs `frequency`)."
    )
    output_mode: OutputMode = OutputMode.MEAN
    quantile_levels: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9], min_length=1, max_length=MAX_QUANTILE_LEVELS,
        description="Levels in (0, 1); used when output_mode is 'quantiles'.",
    )
    num_samples: int = Field(default=20, ge=1, le=MAX_SAMPLES,
                             description="Used when output_mode is 'samples'.")
    past_covariates: dict[CovariateName, Series] | None = Field(
        default=None, max_length=MAX_COVARIATES,
        description="Covariates observed over the history; each as long as `history`.",
    )
    future_covariates: dict[CovariateName, Annotated[list[Value], Field(max_length=MAX_HORIZON)]] | None = Field(  # noqa: E501
        default=None, max_length=MAX_COVARIATES,
        description="Known future values over the horizon; each exactly `horizon` long and "
        "also listed in `past_covariates`.",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> TimeSeriesRequest:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        if self.feature_ref is not None:  # sheaf-serve's reference: read as `features`
            if self.features is not None:
                field_errors(type(self).__name__, [(("feature_ref",), "give features or "
                                                    "feature_ref, not both", None)])
            self.features, self.feature_ref = self.feature_ref.as_features(), None
        if (self.history is None) == (self.features is None):
            problems.append((("history",), "give the history, or name it in the feature "
                             "store with `features` (one of the two)", None))
            field_errors(type(self).__name__, problems)
        length = len(self.history) if self.history is not None else None
        if self.is_multivariate:
            rows = cast(list[Any], self.history)
            width = len(rows[0])
            for i, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != width:
                    problems.append((("history", i), f"every row must have {width} variates "
                                     "(time-major: one row per time step)", row))
                    break
            if self.target_index is not None and self.target_index >= width:
                problems.append((("target_index",), f"is {self.target_index} but history has "
                                 f"{width} variates (0..{width - 1})", self.target_index))
        elif self.history is not None and self.target_index not in (0, None):
            problems.append((("target_index",), f"is {self.target_index} but history is "
                             "univariate (one variate: 0)", self.target_index))
        if self.history is not None and not problems:  # shapes and target_index are sound
            problems.extend(self._unobserved())
        if len(set(self.quantile_levels)) != len(self.quantile_levels):
            problems.append((("quantile_levels",), "levels must be unique",
                             self.quantile_levels))
        for name, values in (self.past_covariates or {}).items():
            if length is not None and len(values) != length:
                problems.append((("past_covariates", name), f"has {len(values)} values; "
                                 f"history has {length}", len(values)))
        for name, values in (self.future_covariates or {}).items():
            if len(values) != self.horizon:
                problems.append((("future_covariates", name), f"has {len(values)} values; "
                                 f"horizon is {self.horizon}", len(values)))
            if name not in (self.past_covariates or {}) and name not in (
                    self.features.past_covariates if self.features else ()):
                problems.append((("future_covariates", name), "must also be given in "
                                 "past_covariates (its values over the history)", name))
        if self.start is not None and self.frequency is None:
            problems.append((("frequency",), "is required when `start` is given", None))
        elif self.start is not None and length is not None and not problems:
            steps = length - 1 + self.horizon
            if not parse_frequency(self.frequency).reaches(self.start, steps):  # type: ignore[arg-type]
                problems.append((("start",), f"the forecast's last timestamp, {steps} steps of "
                                 f"{self.frequency!r} after start, would pass year 9999",
                                 self.start))
        field_errors(type(self).__name__, problems)
        return self

    def _unobserved(self) -> list[tuple[tuple[str | int, ...], str, object]]:
        """A forecast needs at least one observed (non-null) value in each series it
        forecasts: the target variate, or every variate of a joint forecast."""
        forecast = range(self.n_variates) if self.joint else [self.target_index or 0]
        history = self.history or []
        for j in forecast:
            values = (cast(list[Any], row)[j] for row in history) if self.is_multivariate \
                else iter(history)
            if all(value is None for value in values):
                where = f"variate {j} of history" if self.is_multivariate else "history"
                return [(("history",), f"{where} has no observed value (only nulls): there is "
                         "nothing to forecast from", None)]
        return []

    def feature_reference(self) -> SeriesFeatures | None:
        return self.features

    def with_features(self, values: Mapping[str, Any]) -> TimeSeriesRequest:
        """The history (one variate per target feature, time-major) and covariates from
        the feature values read; covariates sent inline are kept beside them."""
        ref = self.features
        assert ref is not None
        series: dict[str, list[Any]] = {}
        problems: list[tuple[Location, str, object]] = []
        for location, name in ref.features():
            value = values.get(name)
            if value is None:
                problems.append((location, f"feature {name!r} has no value for entity "
                                 f"{ref.entity} in feature view {ref.feature_view!r}", None))
            elif not isinstance(value, list | tuple):
                problems.append((location, f"feature {name!r} holds one value, not a series: "
                                 "store series as Array features", value))
            else:
                series[name] = list(value)
        targets = [series.get(name) for name in ref.target]
        lengths = {len(t) for t in targets if t is not None}
        if len(lengths) > 1:
            problems.append((("features", "target"), "the target features' series differ in "
                             f"length ({', '.join(str(len(t or [])) for t in targets)}); a "
                             "multivariate history needs one length", ref.target))
        inline = [(("features", "past_covariates"), name, self.past_covariates)
                  for name in ref.past_covariates] + [
                  (("features", "future_covariates"), name, self.future_covariates)
                  for name in ref.future_covariates]
        for location, name, sent in inline:
            if name in (sent or {}):
                problems.append(((*location, name), f"covariate {name!r} is both sent inline "
                                 "and named as a feature; give it once", name))
        field_errors(type(self).__name__, problems)
        first = targets[0] or []
        history: list[Any] = (first if len(targets) == 1
                              else [list(row) for row in zip(*targets, strict=True)])
        past = {**(self.past_covariates or {}),
                **{name: series[name] for name in ref.past_covariates}}
        future = {**(self.future_covariates or {}),
                  **{covariate: series[feature]
                     for covariate, feature in ref.future_covariates.items()}}
        data = self.model_dump(exclude={"features"})
        data.update(history=history, past_covariates=past or None,
                    future_covariates=future or None)
        return type(self).model_validate(data)

    @property
    def is_multivariate(self) -> bool:
        return bool(self.history) and isinstance(cast(list[Any], self.history)[0], list)

    @property
    def n_variates(self) -> int:
        return len(cast(list[Any], self.history)[0]) if self.is_multivariate else 1

    @property
    def joint(self) -> bool:
        """True when every variate is forecast (multivariate history, target_index null)."""
        return self.is_multivariate and self.target_index is None

    def variates(self) -> list[list[float]]:
        """History as variate-major float lists, missing values as NaN."""
        nan = math.nan
        rows = cast(list[Any], self.history or [])
        if not self.is_multivariate:
            return [[nan if x is None else x for x in rows]]
        columns = zip(*rows, strict=True)
        return [[nan if x is None else x for x in column] for column in columns]

    def largest_magnitude(self) -> float:
        """The largest absolute value in the history and covariates (0 if none): what a
        backend compares with the range its arithmetic holds (`magnitude_problem`)."""
        history = cast(list[Any], self.history or [])
        series: list[list[Any]] = [[value for row in history for value in row]
                                   if self.is_multivariate else history]
        series += [*(self.past_covariates or {}).values(),
                   *(self.future_covariates or {}).values()]
        return max(map(_extreme, series), default=0.0)

    def target_series(self) -> list[float]:
        """The single series to forecast when not joint (NaN for missing values)."""
        series = self.variates()
        return series[self.target_index or 0] if self.is_multivariate else series[0]

    @property
    def parsed_frequency(self) -> Frequency | None:
        return parse_frequency(self.frequency) if self.frequency else None


class TimeSeriesResponse(BaseResponse):
    """A forecast. Arrays are `[h]`, or `[h][v]` for a joint multivariate forecast."""

    model_type: Literal["time_series"] = "time_series"
    horizon: int
    frequency: str | None = None
    output_mode: OutputMode = OutputMode.MEAN
    mean: list[float] | list[list[float]] = Field(description="Point forecast (the median "
                                                  "for Chronos-Bolt and Chronos-2).")
    quantiles: dict[str, list[float] | list[list[float]]] | None = Field(
        default=None, description="Level (as given, e.g. '0.1') → forecast at that level.")
    samples: list[list[float]] | list[list[list[float]]] | None = Field(
        default=None, description="`num_samples` sample paths.")
    timestamps: list[datetime] | None = Field(
        default=None, description="One per horizon step, when `start` and `frequency` are given.")


def _extreme(values: list[Any]) -> float:
    """max |x| over a series, nulls ignored (0 if none). On every request of every model:
    max and min run in C without copying the series (twice as fast as abs over a copy);
    a null makes them raise, and only then is the series filtered."""
    try:
        return max(max(values), -min(values)) if values else 0.0
    except TypeError:  # a null among the values (rare)
        observed = [value for value in values if value is not None]
        return max(max(observed), -min(observed)) if observed else 0.0


def magnitude_problem(request: TimeSeriesRequest, limit: float,
                      arithmetic: str) -> FieldProblem | None:
    """A 422 for values beyond what a backend's arithmetic holds (a forecast of them would
    overflow to NaN), or None."""
    largest = request.largest_magnitude()
    if largest <= limit:
        return None
    return FieldProblem("history", f"holds a value of magnitude {largest:.3g}; this model "
                        f"computes in {arithmetic} and takes values within ±{limit:g}: divide "
                        "the series (and covariates) by a constant and multiply the forecast "
                        "back")


def quantile_key(level: float) -> str:
    """The response key for a quantile level: its shortest round-trip text, e.g. '0.1'."""
    return repr(float(level))


def forecast_timestamps(request: TimeSeriesRequest) -> list[datetime] | None:
    """Timestamps of the forecast steps, or None when the request gives no start."""
    freq = request.parsed_frequency
    if request.start is None or freq is None:
        return None
    return freq.timestamps(request.start, len(request.history or []), request.horizon)
