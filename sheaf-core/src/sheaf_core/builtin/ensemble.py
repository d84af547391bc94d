"""`weighted_ensemble`: the weighted average of several forecasts of the same series.

The mean is averaged, and each quantile level is averaged level by level (quantile
averaging, "Vincentization": the ensemble's 0.9 quantile is the weighted mean of the
members' 0.9 quantiles), which keeps the quantiles ordered. Samples are not combined: a
request for `output_mode: samples` is refused with a 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.combiner import Combiner
from sheaf_core.contracts.time_series import OutputMode, TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.errors import FieldProblem, InvalidRequest


class EnsembleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        default_factory=dict, description="Input node → weight (≥ 0; normalised to sum 1). "
        "Default: equal weights. When given, it must name every input node.")


class WeightedQuantileEnsemble(Combiner[TimeSeriesRequest, TimeSeriesResponse]):
    model_type = "time_series"
    Settings = EnsembleSettings
    settings: EnsembleSettings

    def check_inputs(self, names: Sequence[str]) -> None:
        weights = self.settings.weights
        if not weights:
            return
        missing, unknown = set(names) - weights.keys(), weights.keys() - set(names)
        if missing or unknown:
            raise ValueError(f"weights must name exactly the inputs {sorted(names)}"
                             + (f"; missing {sorted(missing)}" if missing else "")
                             + (f"; not an input: {sorted(unknown)}" if unknown else ""))
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be ≥ 0 with a positive sum")

    def validate_request(self, request: TimeSeriesRequest) -> None:
        if request.output_mode is OutputMode.SAMPLES:
            raise InvalidRequest(FieldProblem(
                "output_mode", "an ensemble combines means and quantiles, not sample paths; "
                "ask for 'mean' or 'quantiles'"))

    def combine(self, request: TimeSeriesRequest,
                responses: Mapping[str, TimeSeriesResponse]) -> TimeSeriesResponse:
        weights = self.settings.weights or {name: 1.0 for name in responses}
        total = sum(weights[name] for name in responses)
        share = {name: weights[name] / total for name in responses}
        first = next(iter(responses.values()))
        quantiles = None
        if first.quantiles is not None:
            quantiles = {level: _weighted([(share[n], r.quantiles[level])  # type: ignore[index]
                                           for n, r in responses.items()])
                         for level in first.quantiles}
        return first.model_copy(update={
            "mean": _weighted([(share[n], r.mean) for n, r in responses.items()]),
            "quantiles": quantiles, "samples": None})


def _weighted(parts: list[tuple[float, Any]]) -> Any:
    """Σ wᵢ·xᵢ over equally shaped `[h]` or `[h][v]` lists."""
    first = parts[0][1]
    if first and isinstance(first[0], list):
        return [_weighted([(w, x[i]) for w, x in parts]) for i in range(len(first))]
    return [sum(w * x[i] for w, x in parts) for i in range(len(first))]
