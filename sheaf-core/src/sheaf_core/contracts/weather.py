"""The `weather` contract: an autoregressive forecast from the atmosphere's recent states.

A request carries the grid (latitudes, longitudes), the pressure levels, and one or more
states — oldest first, the last at `init_time`, as many as the model needs (GraphCast: two,
6 h apart). A state holds surface variables, each `[lat][lon]`, and atmospheric variables,
each `[level][lat][lon]`. Fields that are not forecast — static ones (land-sea mask,
orography) `[lat][lon]`, and forcings that vary in time (top-of-atmosphere radiation)
`[step][lat][lon]` for steps 0..n_steps-1 — come in `forcings`. Arrays are base64
(`EncodedArray`). The response holds, per step, the valid time and the forecast variables.

Shapes, names, levels and the grid are checked here, each problem a 422 naming its place
(e.g. `states.1.atmospheric.t`); the backend then checks that the variables and levels are
the ones its model was trained on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sheaf_core.contracts._validation import field_errors
from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.limits import WorkLimits, over_limit
from sheaf_core.errors import FieldProblem

MAX_STEPS = 240  # 60 days of 6-hour steps
MAX_STATES = 4
MAX_VARIABLES = 256
MAX_LEVELS = 64
MAX_GRID = 4096  # points along latitude or longitude

VariableName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Variables = Annotated[dict[VariableName, EncodedArray], Field(max_length=MAX_VARIABLES)]


class Grid(BaseModel):
    """A regular latitude/longitude grid, in degrees."""

    model_config = ConfigDict(extra="forbid")

    lat: list[float] = Field(min_length=2, max_length=MAX_GRID)
    lon: list[float] = Field(min_length=2, max_length=MAX_GRID)

    @model_validator(mode="after")
    def _in_range(self) -> Grid:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        if any(not -90 <= x <= 90 for x in self.lat):
            problems.append((("lat",), "latitudes must lie in [-90, 90]", None))
        if any(not -180 <= x <= 360 for x in self.lon):
            problems.append((("lon",), "longitudes must lie in [-180, 360]", None))
        field_errors(type(self).__name__, problems)
        return self

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)


class State(BaseModel):
    """The atmosphere at one time."""

    model_config = ConfigDict(extra="forbid")

    time: datetime | None = Field(default=None, description="Optional: checked against "
                                  "init_time and the model's step when given.")
    surface: Variables = Field(default_factory=dict, description="name → [lat][lon]")
    atmospheric: Variables = Field(default_factory=dict, description="name → "
                                   "[level][lat][lon], levels as in `levels`")


class WeatherLimits(WorkLimits):
    """What one forecast may ask for: a rollout's work grows with its steps (the grid is
    the model's own)."""

    max_steps: int = Field(default=MAX_STEPS, ge=1, le=MAX_STEPS,
                           description="Autoregressive steps (n_steps).")

    def problems(self, request: WeatherRequest) -> list[FieldProblem]:
        if request.n_steps > self.max_steps:
            return [over_limit("n_steps", request.n_steps, self.max_steps, "max_steps")]
        return []


class WeatherRequest(BaseRequest):
    """Forecast `n_steps` steps after `init_time` from `states`."""

    model_type: Literal["weather"] = "weather"
    Limits: ClassVar[type[WorkLimits]] = WeatherLimits

    init_time: datetime = Field(description="Time of the last state; step k is valid at "
                                "init_time + k * the model's step.")
    n_steps: int = Field(default=1, ge=1, le=MAX_STEPS, description="Autoregressive steps.")
    grid: Grid
    levels: list[float] = Field(default_factory=list, max_length=MAX_LEVELS,
                                description="Pressure levels (hPa) of atmospheric variables.")
    states: list[State] = Field(min_length=1, max_length=MAX_STATES,
                                description="Oldest first; the last is at init_time.")
    forcings: Variables = Field(
        default_factory=dict, description="Fields not forecast: static ones [lat][lon], "
        "time-varying ones [step][lat][lon] for steps 0..n_steps-1.")

    @model_validator(mode="after")
    def _check_shapes(self) -> WeatherRequest:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        grid = list(self.grid.shape)
        if len(set(self.levels)) != len(self.levels):
            problems.append((("levels",), "levels must be unique", self.levels))
        first = self.states[0]
        for i, state in enumerate(self.states):
            for kind, wanted in (("surface", grid), ("atmospheric", [len(self.levels), *grid])):
                variables: dict[str, EncodedArray] = getattr(state, kind)
                for name, array in variables.items():
                    if array.shape != wanted:
                        problems.append((("states", i, kind, name), f"has shape {array.shape};"
                                         f" expected {wanted} ({_dims(kind)})", array.shape))
                if i and set(variables) != set(getattr(first, kind)):
                    problems.append((("states", i, kind), "every state must have the same "
                                     f"variables as states.0 ({sorted(getattr(first, kind))})",
                                     sorted(variables)))
            if not state.surface and not state.atmospheric:
                problems.append((("states", i), "has no variables", None))
        if first.atmospheric and not self.levels:
            problems.append((("levels",), "atmospheric variables need their pressure levels",
                             None))
        for name, array in self.forcings.items():
            if array.shape != grid and array.shape != [self.n_steps, *grid]:
                problems.append((("forcings", name), f"has shape {array.shape}; expected "
                                 f"{grid} (static) or {[self.n_steps, *grid]} (one per step)",
                                 array.shape))
        if self.states[-1].time is not None and self.states[-1].time != self.init_time:
            problems.append((("states", len(self.states) - 1, "time"), "the last state is "
                             f"at init_time ({self.init_time.isoformat()})",
                             self.states[-1].time))
        field_errors(type(self).__name__, problems)
        return self

    def valid_times(self, step: timedelta) -> list[datetime]:
        return [self.init_time + k * step for k in range(1, self.n_steps + 1)]


def _dims(kind: str) -> str:
    return "lat, lon" if kind == "surface" else "level, lat, lon"


class ForecastStep(BaseModel):
    """The forecast at one valid time."""

    model_config = ConfigDict(extra="forbid")

    step: int
    valid_time: datetime
    surface: dict[str, EncodedArray] = Field(default_factory=dict)
    atmospheric: dict[str, EncodedArray] = Field(default_factory=dict)


class WeatherResponse(BaseResponse):
    """Per step, the forecast variables and their valid time."""

    model_type: Literal["weather"] = "weather"
    init_time: datetime
    step_hours: float
    grid: Grid
    levels: list[float] = Field(default_factory=list)
    steps: list[ForecastStep]
