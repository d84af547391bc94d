"""The `chronos` backend: Chronos, Chronos-Bolt and Chronos-2 via `BaseChronosPipeline`.

Batching: one pipeline call per batch at the batch's longest horizon; each request gets its
own horizon (a prefix: the models forecast step by step, so a prefix is exactly what the
request would get alone), its own history length (the pipeline left-pads) and its own
quantile levels (taken from the model's quantile grid, interpolated between neighbours).
Chronos-2 conditions its first output patches on how many patches it is asked for, and its
pipeline takes only inputs of one shape per call (same number of target rows, same
covariate names), so a Chronos-2 batch is split into such homogeneous groups, one call each
(e.g. univariate requests with horizons 1-16 and no covariates share one call).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sheaf_backend_chronos.quantiles import at_level, covers
from sheaf_core.backend import Backend
from sheaf_core.contracts.time_series import (
    OutputMode,
    TimeSeriesRequest,
    TimeSeriesResponse,
    forecast_timestamps,
    magnitude_problem,
    quantile_key,
)
from sheaf_core.deadlines import stop_at_deadline
from sheaf_core.errors import FieldProblem, InvalidRequest
from sheaf_core.weights import model_dir_problem, raise_problems

if TYPE_CHECKING:  # heavy imports happen in load()/predict(), never at discovery
    import numpy as np
    import torch

log = logging.getLogger("sheaf.chronos")

Kind = Literal["chronos", "chronos-bolt", "chronos-2"]
#: The models scale each series by its standard deviation in float32: squares of values
#: near 1e19 overflow (measured: Bolt answers NaN from 1e20). 1e15 leaves room for long
#: contexts.
MAX_ABS_VALUE = 1e15


class ChronosSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, description="Hub id (amazon/chronos-bolt-tiny) or a "
                          "local directory saved with save_pretrained.")
    device: str = Field(default="cpu", description="torch device map: cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    torch_threads: int = Field(default=1, ge=1, le=256, description="torch.set_num_threads "
                               "(process-wide). 1 serves best on CPU: batch instead.")
    num_samples: int = Field(default=20, ge=1, le=1000, description="Chronos (original) only: "
                             "sample paths drawn to estimate quantiles and the mean.")
    max_horizon: int | None = Field(default=None, ge=1, description="Reject longer horizons "
                                    "(default: no limit beyond the contract's).")


class ChronosBackend(Backend[TimeSeriesRequest, TimeSeriesResponse]):
    """See the module docstring."""

    model_type = "time_series"
    Settings = ChronosSettings

    pipeline: Any
    kind: Kind
    grid: list[float]  # the model's quantile levels (Bolt, Chronos-2)

    def preflight(self) -> list[FieldProblem]:
        problem = model_dir_problem(self.settings.model_id, "model_id")  # type: ignore[attr-defined]
        return [problem] if problem else []

    def load(self) -> None:
        import torch
        from chronos import BaseChronosPipeline, Chronos2Pipeline, ChronosBoltPipeline

        raise_problems(self.preflight())
        s: ChronosSettings = self.settings  # type: ignore[assignment]
        torch.set_num_threads(s.torch_threads)
        self.pipeline = BaseChronosPipeline.from_pretrained(s.model_id, device_map=s.device,
                                                            dtype=s.dtype)
        if isinstance(self.pipeline, Chronos2Pipeline):
            self.kind = "chronos-2"
        elif isinstance(self.pipeline, ChronosBoltPipeline):
            self.kind = "chronos-bolt"
        else:
            self.kind = "chronos"
        # Every autoregressive chunk (Bolt, Chronos-2) or generated token (Chronos) calls
        # the inner model: a batch past its deadline stops there.
        stop_at_deadline(self.pipeline.inner_model)
        self.grid = sorted(float(q) for q in getattr(self.pipeline, "quantiles", []) or [])
        if self.kind != "chronos" and 0.5 not in self.grid:
            raise ValueError(f"{s.model_id}: the model's quantiles {self.grid} lack 0.5 "
                             "(the median answers `mean`)")
        super().load()

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.kind,
            "model_id": self.settings.model_id,  # type: ignore[attr-defined]
            "quantiles": self.grid or "any (estimated from samples)",
            "prediction_length": self.pipeline.model_prediction_length,
            "context_length": getattr(self.pipeline, "model_context_length", None),
            "output_modes": ["mean", "quantiles"] + (["samples"] if self.kind == "chronos" else []),
            "multivariate": self.kind == "chronos-2",
            "covariates": self.kind == "chronos-2",
        }

    def warmup_requests(self) -> list[TimeSeriesRequest]:
        """A short daily-looking series, quantiles for Bolt and Chronos-2 (the model's own
        grid), sample paths for original Chronos."""
        mode = OutputMode.SAMPLES if self.kind == "chronos" else OutputMode.QUANTILES
        history = [10.0 + (i % 7) + 0.1 * i for i in range(64)]
        return [TimeSeriesRequest(history=history, horizon=8, output_mode=mode,
                                  quantile_levels=[0.5], num_samples=2)]

    # -- validation --------------------------------------------------------------------------

    def validate_request(self, request: TimeSeriesRequest) -> None:
        problems: list[FieldProblem] = []
        family = {"chronos": "Chronos", "chronos-bolt": "Chronos-Bolt"}.get(self.kind)
        if family is not None:
            if request.joint:
                problems.append(FieldProblem("target_index", f"{family} forecasts one series; "
                                "set target_index to a variate, or serve a Chronos-2 model for "
                                "joint multivariate forecasts"))
            for field in ("past_covariates", "future_covariates"):
                if getattr(request, field):
                    problems.append(FieldProblem(field, f"{family} does not use covariates; "
                                                 "serve a Chronos-2 model"))
        if request.output_mode is OutputMode.SAMPLES and self.kind != "chronos":
            problems.append(FieldProblem("output_mode", f"'samples' needs an original Chronos "
                                         f"model; this is {self.kind}, which forecasts "
                                         "quantiles: use 'quantiles'"))
        if request.output_mode is OutputMode.QUANTILES and self.grid:
            outside = [q for q in request.quantile_levels if not covers(self.grid, q)]
            if outside:
                problems.append(FieldProblem("quantile_levels", f"{outside} lie outside the "
                                f"model's range [{self.grid[0]}, {self.grid[-1]}]; levels "
                                "inside it are interpolated between neighbours"))
        too_large = magnitude_problem(request, MAX_ABS_VALUE, "float32")
        if too_large is not None:
            problems.append(too_large)
        limit = self.settings.max_horizon  # type: ignore[attr-defined]
        if limit is not None and request.horizon > limit:
            problems.append(FieldProblem("horizon", f"is {request.horizon}; this model "
                                         f"answers at most {limit} (max_horizon)"))
        if problems:
            raise InvalidRequest(problems)

    # -- prediction --------------------------------------------------------------------------

    def deterministic(self, request: TimeSeriesRequest) -> bool:
        """Original Chronos draws its sample paths at random (no seed in the contract), so
        its answers are never cached; Bolt and Chronos-2 compute quantiles directly."""
        return self.kind != "chronos"

    def predict(self, requests: Sequence[TimeSeriesRequest]) -> list[TimeSeriesResponse]:
        if not requests:
            return []
        with warnings.catch_warnings():
            # "prediction length > model's": allowed on purpose (autoregressive unrolling)
            warnings.simplefilter("ignore")
            if self.kind == "chronos-2":
                return self._predict_chronos2(requests)
            if self.kind == "chronos-bolt":
                return self._predict_bolt(requests)
            return self._predict_chronos(requests)

    def _predict_bolt(self, requests: Sequence[TimeSeriesRequest]) -> list[TimeSeriesResponse]:
        horizon = max(r.horizon for r in requests)
        contexts = _left_padded([r.target_series() for r in requests])
        # (batch, quantiles, horizon): the model's own grid, one call for the whole batch
        values = self.pipeline.predict(contexts, prediction_length=horizon).float().numpy()
        return [self._from_grid(r, values[i]) for i, r in enumerate(requests)]

    def _predict_chronos2(self, requests: Sequence[TimeSeriesRequest]
                          ) -> list[TimeSeriesResponse]:
        patch = self.pipeline.model_output_patch_size
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[_chronos2_group(r, patch)].append(i)
        answers: list[TimeSeriesResponse | None] = [None] * len(requests)
        for members in groups.values():
            horizon = max(requests[i].horizon for i in members)
            inputs = [_chronos2_input(requests[i], horizon) for i in members]
            # list of (variates, quantiles, horizon)
            outputs = self.pipeline.predict(inputs, prediction_length=horizon)
            for i, values in zip(members, outputs, strict=True):
                array = values.float().numpy()
                answers[i] = self._from_grid(requests[i], array if requests[i].joint
                                             else array[0])
        return answers  # type: ignore[return-value]

    def _predict_chronos(self, requests: Sequence[TimeSeriesRequest]
                         ) -> list[TimeSeriesResponse]:
        import numpy as np

        horizon = max(r.horizon for r in requests)
        draws = max([self.settings.num_samples]  # type: ignore[attr-defined]
                    + [r.num_samples for r in requests if r.output_mode is OutputMode.SAMPLES])
        contexts = _left_padded([r.target_series() for r in requests])
        samples = self.pipeline.predict(contexts, prediction_length=horizon,
                                        num_samples=draws).float().numpy()  # (B, S, H)
        answers = []
        for i, r in enumerate(requests):
            paths = samples[i, :, : r.horizon]
            quantiles = out_samples = None
            if r.output_mode is OutputMode.QUANTILES:
                quantiles = {quantile_key(q): np.quantile(paths, q, axis=0).tolist()
                             for q in r.quantile_levels}
            elif r.output_mode is OutputMode.SAMPLES:
                out_samples = paths[: r.num_samples].tolist()
            answers.append(_response(r, paths.mean(axis=0).tolist(), quantiles, out_samples))
        return answers

    def _from_grid(self, request: TimeSeriesRequest, values: np.ndarray) -> TimeSeriesResponse:
        """`values[..., q, h]` on the model's grid → the request's answer (prefix of h)."""
        values = values[..., : request.horizon]
        mean = _shape(at_level(values, self.grid, 0.5))
        quantiles = None
        if request.output_mode is OutputMode.QUANTILES:
            quantiles = {quantile_key(q): _shape(at_level(values, self.grid, q))
                         for q in request.quantile_levels}
        return _response(request, mean, quantiles, None)


def _shape(array: np.ndarray) -> Any:
    """`[h]` stays; joint `[v][h]` becomes time-major `[h][v]`, as the contract says."""
    return (array.T if array.ndim == 2 else array).tolist()


def _response(request: TimeSeriesRequest, mean: Any, quantiles: Any,
              samples: Any) -> TimeSeriesResponse:
    return TimeSeriesResponse(horizon=request.horizon, frequency=request.frequency,
                              output_mode=request.output_mode, mean=mean, quantiles=quantiles,
                              samples=samples, timestamps=forecast_timestamps(request))


def _chronos2_group(request: TimeSeriesRequest, patch: int) -> tuple[Any, ...]:
    """Requests with equal keys can share one Chronos-2 call and answer as if alone."""
    past = sorted(request.past_covariates or ())
    if request.is_multivariate and not request.joint:
        past += [f"__variate_{j}" for j in range(request.n_variates)
                 if j != request.target_index]
    return (math.ceil(request.horizon / patch), request.n_variates if request.joint else 1,
            tuple(sorted(past)), tuple(sorted(request.future_covariates or ())))


def _chronos2_input(request: TimeSeriesRequest, horizon: int) -> dict[str, Any]:
    """Chronos-2's dict input. Non-target variates of a multivariate history become past
    covariates; future covariates are NaN-padded to the group's horizon, as the pipeline
    itself pads them to whole output patches."""
    import numpy as np

    variates = np.asarray(request.variates(), dtype=np.float32)
    past: dict[str, np.ndarray] = {}
    if request.joint:
        target = variates
    else:
        index = request.target_index or 0  # 0 for univariate history (one row)
        target = variates[index]
        for j in range(len(variates)):
            if j != index:
                past[f"__variate_{j}"] = variates[j]
    for name, values in (request.past_covariates or {}).items():
        past[name] = _floats(values)
    entry: dict[str, Any] = {"target": target}
    if past:
        entry["past_covariates"] = past
    if request.future_covariates:
        entry["future_covariates"] = {
            name: np.concatenate([_floats(values),
                                  np.full(horizon - len(values), np.nan, np.float32)])
            for name, values in request.future_covariates.items()}
    return entry


def _left_padded(series: Sequence[Sequence[float]]) -> torch.Tensor:
    """One (batch, longest) float32 tensor, shorter series left-padded with NaN: what the
    pipeline builds from a list of tensors, in one numpy pass instead of a tensor per
    request (the per-request path held the GIL long enough to show in serving profiles)."""
    import numpy as np
    import torch

    width = max(len(s) for s in series)
    stacked = np.full((len(series), width), np.nan, dtype=np.float32)
    for row, values in zip(stacked, series, strict=True):
        row[width - len(values):] = values
    return torch.from_numpy(stacked)


def _floats(values: Sequence[float | None]) -> np.ndarray:
    import numpy as np

    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float32)
