"""Pipelines in sheaf.yaml: the graph is checked where it is written (names, cycles, unused
nodes), then against what is served (models, combiners, one model type); and the shipped
weighted ensemble averages means and quantiles level by level."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from sheaf_core import (
    BaseRequest,
    BaseResponse,
    Combiner,
    ConfigError,
    InvalidRequest,
    TimeSeriesRequest,
    TimeSeriesResponse,
    discover,
    hookimpl,
)
from sheaf_core.builtin.ensemble import WeightedQuantileEnsemble
from sheaf_core.pipeline_spec import PipelineSpec, plan_pipeline
from sheaf_server.settings import parse_config

MODELS = [{"name": "chronos", "backend": "baseline"}, {"name": "baseline", "backend": "baseline"}]
TYPES = {"chronos": "time_series", "baseline": "time_series"}


def diamond(**mix: Any) -> dict[str, Any]:
    return {"name": "ensemble", "output": "mix", "nodes": {
        "chronos": {"model": "chronos"}, "baseline": {"model": "baseline"},
        "mix": {"combiner": "weighted_ensemble", "inputs": ["chronos", "baseline"], **mix}}}


def config_error(pipeline: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"models": MODELS, "pipelines": [pipeline]})
    return str(info.value)


def test_a_diamond_is_planned_inputs_first() -> None:
    config = parse_config({"models": MODELS, "pipelines": [diamond()]})
    plan = plan_pipeline(config.pipelines[0], TYPES, discover())
    assert plan.order == ["chronos", "baseline", "mix"] and plan.model_type == "time_series"
    assert plan.models == {"chronos": "chronos", "baseline": "baseline"}
    assert isinstance(plan.combiners["mix"], WeightedQuantileEnsemble)


@pytest.mark.parametrize(("change", "message"), [
    ({"output": "nope"}, "output: 'nope' is not a node"),
    ({"nodes": {"a": {"model": "chronos"}, "mix": {"combiner": "c", "inputs": ["a", "ghost"]}}},
     "nodes.mix.inputs: 'ghost' is not a node"),
    ({"nodes": {"x": {"combiner": "c", "inputs": ["y"]}, "y": {"combiner": "c", "inputs": ["x"]},
                "mix": {"combiner": "c", "inputs": ["x"]}}}, "cycle: x → y → x"),
    ({"nodes": {"a": {"model": "chronos"}, "b": {"model": "baseline"},
                "mix": {"combiner": "c", "inputs": ["a"]}}}, "nodes b do not feed the output"),
    ({"nodes": {"mix": {"model": "chronos", "combiner": "c"}}}, "exactly one of model or comb"),
    ({"nodes": {"mix": {"combiner": "c"}}}, "a combiner node needs inputs"),
    ({"name": "models"}, "reserved"),
])
def test_a_malformed_graph_is_refused_naming_the_pipeline(change: dict[str, Any],
                                                          message: str) -> None:
    error = config_error({**diamond(), **change})
    assert message in error and "pipelines[0]" in error


@pytest.mark.parametrize(("pipeline", "message"), [
    ({**diamond(), "nodes": {"c": {"model": "prophet"}}, "output": "c"},
     "nodes.c.model: 'prophet' is not a served model"),
    (diamond(combiner="median"), "nodes.mix.combiner: unknown combiner 'median'"),
    (diamond(kwargs={"weights": {"chronos": 1}}), "missing ['baseline']"),
    (diamond(kwargs={"wieghts": {}}), "kwargs.wieghts"),
])
def test_a_pipeline_is_checked_against_what_is_served(pipeline: dict[str, Any],
                                                       message: str) -> None:
    spec = PipelineSpec.model_validate(pipeline)
    with pytest.raises(ConfigError, match="pipeline 'ensemble'") as info:
        plan_pipeline(spec, TYPES, discover())
    assert message in str(info.value)


class EchoRequest(BaseRequest):
    model_type: Literal["echo"] = "echo"


class EchoResponse(BaseResponse):
    model_type: Literal["echo"] = "echo"


class First(Combiner[EchoRequest, EchoResponse]):
    model_type = "echo"

    def combine(self, request: EchoRequest, responses: Any) -> EchoResponse:
        return next(iter(responses.values()))


class EchoPlugin:
    __name__ = "echo-plugin"

    @hookimpl
    def sheaf_register_contracts(self, register: Any) -> None:
        register("echo", EchoRequest, EchoResponse)

    @hookimpl
    def sheaf_register_combiners(self, register: Any) -> None:
        register("first", First)


def test_pipeline_and_model_names_share_one_namespace() -> None:
    assert "two models or pipelines are named 'chronos'" in config_error(
        {**diamond(), "name": "chronos"})


def test_combiners_come_from_plugins_and_must_share_the_model_type() -> None:
    registry = discover([EchoPlugin()])
    assert registry.combiner("first") is First
    assert "first" in next(p for p in registry.plugins if p.name == "echo-plugin").combiners
    mixed = PipelineSpec.model_validate(diamond(combiner="first"))
    with pytest.raises(ConfigError, match=r"one model type.*mix: echo"):
        plan_pipeline(mixed, TYPES, registry)


def forecast(mean: list[float], quantiles: dict[str, list[float]]) -> TimeSeriesResponse:
    return TimeSeriesResponse(horizon=len(mean), mean=mean, quantiles=quantiles,
                              output_mode="quantiles")


def test_the_weighted_ensemble_averages_means_and_each_quantile_level() -> None:
    ensemble = WeightedQuantileEnsemble(weights={"a": 3, "b": 1})
    request = TimeSeriesRequest(history=[1, 2], horizon=2, output_mode="quantiles",
                                quantile_levels=[0.1, 0.9])
    result = ensemble.combine(request, {
        "a": forecast([4, 8], {"0.1": [0, 4], "0.9": [8, 12]}),
        "b": forecast([0, 4], {"0.1": [-4, 0], "0.9": [4, 8]})})
    assert result.mean == [3, 7]
    assert result.quantiles == {"0.1": [-1, 3], "0.9": [7, 11]}
    equal = WeightedQuantileEnsemble().combine(request, {"a": forecast([4, 8], {}),
                                                         "b": forecast([0, 4], {})})
    assert equal.mean == [2, 6]


def test_the_weighted_ensemble_refuses_sample_paths_naming_the_field() -> None:
    request = TimeSeriesRequest(history=[1, 2], horizon=2, output_mode="samples")
    with pytest.raises(InvalidRequest) as info:
        WeightedQuantileEnsemble().validate_request(request)
    assert info.value.problems[0].field == "output_mode"
