"""How a GraphCast checkpoint's channels map to variables, and back.

A GraphCastNet sees one tensor `(channels, lat, lon)` per step: the forecast variables of the
last `input_states` states (oldest first, each in `state_variables` order), then the
`forcings` (static, or one field per step). It answers the forecast variables, normalised —
as increments over the last state when `residual` (GraphCast's way). This module builds the
input tensor from a request and turns an output back into variables, in physical units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sheaf_core.contracts.weather import State, WeatherRequest
from sheaf_core.errors import FieldProblem

if TYPE_CHECKING:
    import numpy as np


class Channel(BaseModel):
    """One forecast variable: a surface field (`level` absent) or one pressure level of an
    atmospheric one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    level: float | None = None

    @property
    def key(self) -> str:
        """`name` or `name@level`: how normalisation statistics are keyed."""
        return self.name if self.level is None else f"{self.name}@{self.level:g}"


class Stats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)


class ChannelMap(BaseModel):
    """The checkpoint's channel layout and normalisation (part of the backend kwargs)."""

    model_config = ConfigDict(extra="forbid")

    state_variables: list[Channel] = Field(min_length=1, description="The model's output "
                                           "channels, in order; also each input state's.")
    forcings: list[str] = Field(default_factory=list, description="Input channels after "
                                "the states: names of the request's `forcings`.")
    input_states: int = Field(default=2, ge=1, le=4, description="States per step "
                              "(GraphCast: 2, 6 h apart).")
    normalization: dict[str, Stats] = Field(
        default_factory=dict, description="`name` or `name@level` → mean/std of the field; "
        "missing: mean 0, std 1.")
    residual: bool = Field(default=True, description="Outputs are normalised increments over "
                           "the last state (GraphCast), not the next state itself.")
    increment_normalization: dict[str, Stats] = Field(
        default_factory=dict, description="With `residual`: mean/std of one step's change, "
        "keyed like `normalization`.")

    @model_validator(mode="after")
    def _unique(self) -> ChannelMap:
        keys = [c.key for c in self.state_variables]
        if len(set(keys)) != len(keys):
            raise ValueError(f"state_variables has duplicates: {keys}")
        for name in {c.name for c in self.state_variables if c.level is not None}:
            have = sorted(c.level for c in self.state_variables
                          if c.name == name and c.level is not None)
            if have != self.levels:
                raise ValueError(f"state_variables: atmospheric variable {name!r} has levels "
                                 f"{have}; every atmospheric variable needs all of "
                                 f"{self.levels}")
        return self

    @property
    def input_channels(self) -> int:
        return self.input_states * len(self.state_variables) + len(self.forcings)

    @property
    def levels(self) -> list[float]:
        """The pressure levels the model forecasts, ascending."""
        return sorted({c.level for c in self.state_variables if c.level is not None})

    def problems(self, request: WeatherRequest) -> list[FieldProblem]:
        """What the request lacks for this model (names, levels, states, forcings)."""
        found: list[FieldProblem] = []
        if len(request.states) < self.input_states:
            found.append(FieldProblem("states", f"this model needs {self.input_states} "
                                      f"states (oldest first); got {len(request.states)}"))
        missing_levels = [lv for lv in self.levels if lv not in request.levels]
        if missing_levels:
            found.append(FieldProblem("levels", f"this model needs levels {missing_levels} "
                                      f"(it forecasts {self.levels})"))
        last = request.states[-1]
        for channel in self.state_variables:
            kind = "surface" if channel.level is None else "atmospheric"
            if channel.name not in getattr(last, kind):
                found.append(FieldProblem(f"states.{kind}.{channel.name}", "this model needs "
                                          f"{kind} variable {channel.name!r}"))
        for name in self.forcings:
            if name not in request.forcings:
                found.append(FieldProblem(f"forcings.{name}", f"this model needs forcing "
                                          f"{name!r} (static [lat][lon] or [step][lat][lon])"))
        return found

    # -- tensors -----------------------------------------------------------------------------

    def state_array(self, request: WeatherRequest, state: State) -> np.ndarray:
        """One state's forecast variables as `(channels, lat, lon)`, physical units."""
        import numpy as np

        planes = []
        for channel in self.state_variables:
            if channel.level is None:
                planes.append(state.surface[channel.name].to_numpy())
            else:
                index = request.levels.index(channel.level)
                planes.append(state.atmospheric[channel.name].to_numpy()[index])
        return np.stack(planes).astype("float32")

    def model_input(self, states: Sequence[np.ndarray], forcings: np.ndarray) -> np.ndarray:
        """`(input_channels, lat, lon)`, normalised: the last `input_states` states, then
        this step's forcings."""
        import numpy as np

        mean, std = self._vectors(self.normalization)
        recent = [(s - mean) / std for s in states[-self.input_states:]]
        forcing_mean, forcing_std = self._forcing_vectors()
        return np.concatenate([*recent, (forcings - forcing_mean) / forcing_std]).astype(
            "float32")

    def forcings_at(self, request: WeatherRequest, step: int) -> np.ndarray:
        """The forcing channels for step `step` (0-based), `(len(forcings), lat, lon)`."""
        import numpy as np

        planes = []
        for name in self.forcings:
            values = request.forcings[name].to_numpy()
            planes.append(values[step] if values.ndim == 3 else values)
        if not planes:
            return np.zeros((0, *request.grid.shape), dtype="float32")
        return np.stack(planes).astype("float32")

    def next_state(self, last: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The model's normalised output → the next state, physical units."""
        if self.residual:
            mean, std = self._vectors(self.increment_normalization)
            return (last + output * std + mean).astype("float32")
        mean, std = self._vectors(self.normalization)
        return (output * std + mean).astype("float32")

    def split(self, array: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A state `(channels, lat, lon)` → (surface name → [lat][lon], atmospheric name →
        [level][lat][lon] over the model's levels)."""
        import numpy as np

        surface: dict[str, np.ndarray] = {}
        by_level: dict[str, dict[float, np.ndarray]] = {}
        for channel, plane in zip(self.state_variables, array, strict=True):
            if channel.level is None:
                surface[channel.name] = plane
            else:
                by_level.setdefault(channel.name, {})[channel.level] = plane
        atmospheric = {name: np.stack([planes[lv] for lv in sorted(planes)])
                       for name, planes in by_level.items()}
        return surface, atmospheric

    def climatology(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Every field at its normalisation mean on a `shape` grid: a state
        `(channels, lat, lon)` and the forcings `(len(forcings), lat, lon)`."""
        import numpy as np

        state_means, _ = self._vectors(self.normalization)
        forcing_means, _ = self._forcing_vectors()
        return (np.broadcast_to(state_means, (len(state_means), *shape)).copy(),
                np.broadcast_to(forcing_means, (len(forcing_means), *shape)).copy())

    def _vectors(self, stats: dict[str, Stats]) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        pairs = [stats.get(c.key, Stats()) for c in self.state_variables]
        return (np.array([p.mean for p in pairs], dtype="float32")[:, None, None],
                np.array([p.std for p in pairs], dtype="float32")[:, None, None])

    def _forcing_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        pairs = [self.normalization.get(name, Stats()) for name in self.forcings]
        return (np.array([p.mean for p in pairs], dtype="float32").reshape(-1, 1, 1),
                np.array([p.std for p in pairs], dtype="float32").reshape(-1, 1, 1))
