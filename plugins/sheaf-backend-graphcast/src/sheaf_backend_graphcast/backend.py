"""The `graphcast` backend: GraphCast forecasts through PhysicsNeMo's GraphCastNet.

The checkpoint is a `.mdlus` file read by PhysicsNeMo's own `Module.from_checkpoint`. The
backend kwargs say how its channels map to variables and levels (`ChannelMap`). A forecast
is an autoregressive rollout: each step's output becomes the newest state of the next step's
input. GraphCastNet takes one sample at a time, so a batch is answered request by request;
`stream()` yields each step as soon as it is computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sheaf_backend_graphcast.channels import ChannelMap
from sheaf_core.backend import Backend, ProgressEvent
from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import (
    ForecastStep,
    Grid,
    State,
    WeatherRequest,
    WeatherResponse,
)
from sheaf_core.deadlines import check_deadline
from sheaf_core.errors import FieldProblem, InvalidRequest
from sheaf_core.weights import file_problem, raise_problems

if TYPE_CHECKING:
    import numpy as np


class GraphCastSettings(ChannelMap):
    checkpoint: str = Field(min_length=1, description="Path of the .mdlus checkpoint.")
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:1, ...")
    step_hours: float = Field(default=6.0, gt=0, description="Time one model step advances.")


class WeatherStepEvent(ProgressEvent):
    """A streamed forecast step: progress, with the step's forecast."""

    forecast: ForecastStep


class GraphCastBackend(Backend[WeatherRequest, WeatherResponse]):
    """See the module docstring."""

    model_type = "weather"
    Settings = GraphCastSettings
    supports_streaming = True
    settings: GraphCastSettings

    def preflight(self) -> list[FieldProblem]:
        problem = file_problem(self.settings.checkpoint, "checkpoint", "PhysicsNeMo .mdlus")
        return [problem] if problem else []

    def load(self) -> None:
        import physicsnemo
        import torch

        raise_problems(self.preflight())
        model = physicsnemo.Module.from_checkpoint(self.settings.checkpoint)
        expected = (self.settings.input_channels, len(self.settings.state_variables))
        found = (model.input_dim_grid_nodes, model.output_dim_grid_nodes)
        if found != expected:
            raise ValueError(
                f"backend_kwargs: the channel map describes {expected[0]} input and "
                f"{expected[1]} output channels, but {self.settings.checkpoint} has "
                f"{found[0]} and {found[1]}; fix state_variables / forcings / input_states")
        self.model = model.to(self.settings.device).eval()
        self.grid_shape: tuple[int, int] = tuple(model.input_res)  # type: ignore[assignment]
        self._torch = torch
        super().load()

    def warmup_requests(self) -> list[WeatherRequest]:
        """One step from calm states: every field at its normalisation mean, on the
        model's grid, with the states and forcings the channel map asks for."""
        import numpy as np

        channels, shape = self.settings, self.grid_shape
        state, forcing_planes = channels.climatology(shape)
        surface, atmospheric = channels.split(state)
        init = datetime(2000, 1, 1, 12)
        step = timedelta(hours=self.settings.step_hours)
        states = [State(time=init - k * step, surface=_encoded(surface),
                        atmospheric=_encoded(atmospheric))
                  for k in reversed(range(channels.input_states))]
        forcings = _encoded(dict(zip(channels.forcings, forcing_planes, strict=True)))
        grid = Grid(lat=np.linspace(-90, 90, shape[0]).tolist(),
                    lon=(np.arange(shape[1]) * 360 / shape[1]).tolist())
        return [WeatherRequest(init_time=init, n_steps=1, grid=grid, levels=channels.levels,
                               states=states, forcings=forcings)]

    def validate_request(self, request: WeatherRequest) -> None:
        problems = self.settings.problems(request)
        if request.grid.shape != self.grid_shape:
            problems.append(FieldProblem("grid", f"is {request.grid.shape[0]}x"
                                         f"{request.grid.shape[1]} (lat x lon); this model "
                                         f"runs on {self.grid_shape[0]}x{self.grid_shape[1]}"))
        if problems:
            raise InvalidRequest(problems)

    def predict(self, requests: Sequence[WeatherRequest]) -> list[WeatherResponse]:
        return [self._answer(request, list(self.rollout(request))) for request in requests]

    def stream(self, request: WeatherRequest) -> Iterator[ProgressEvent | WeatherResponse]:
        steps = []
        for step in self.rollout(request):
            steps.append(step)
            yield WeatherStepEvent(step=step.step, total=request.n_steps, forecast=step)
        yield self._answer(request, steps)

    def rollout(self, request: WeatherRequest) -> Iterator[ForecastStep]:
        """Each step's forecast, as it is computed."""
        channels = self.settings
        states = [channels.state_array(request, s) for s in request.states]
        times = request.valid_times(timedelta(hours=self.settings.step_hours))
        for k, valid_time in enumerate(times):
            check_deadline()  # a batch past its deadline stops between steps
            x = channels.model_input(states, channels.forcings_at(request, k))
            states.append(channels.next_state(states[-1], self._forward(x)))
            surface, atmospheric = channels.split(states[-1])
            yield ForecastStep(step=k + 1, valid_time=valid_time,
                               surface=_encoded(surface), atmospheric=_encoded(atmospheric))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(x).unsqueeze(0).to(self.settings.device)
            return self.model(tensor)[0].float().cpu().numpy()  # type: ignore[no-any-return]

    def _answer(self, request: WeatherRequest, steps: list[ForecastStep]) -> WeatherResponse:
        return WeatherResponse(init_time=request.init_time, step_hours=self.settings.step_hours,
                               grid=request.grid, levels=self.settings.levels, steps=steps)

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.settings.checkpoint, "device": self.settings.device,
                "grid": list(self.grid_shape), "step_hours": self.settings.step_hours,
                "variables": [c.key for c in self.settings.state_variables],
                "forcings": self.settings.forcings, "input_states": self.settings.input_states}


def _encoded(arrays: dict[str, Any]) -> dict[str, EncodedArray]:
    return {name: EncodedArray.from_numpy(values) for name, values in arrays.items()}
