"""Pipelines in sheaf.yaml: a DAG over served models and combiners, with its own route.

    pipelines:
      - name: ensemble
        nodes:
          chronos:  {model: chronos}          # a served model, given the pipeline's request
          baseline: {model: baseline}
          mix: {combiner: weighted_ensemble, inputs: [chronos, baseline],
                kwargs: {weights: {chronos: 0.7, baseline: 0.3}}}
        output: mix

`PipelineSpec` checks the graph's shape alone (one kind per node, known inputs, no cycle,
every node feeding the output). `plan_pipeline` checks it against the served models and the
registry (model types agree, combiners exist and accept their kwargs and inputs), giving
the order to run nodes in and the constructed combiners.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sheaf_core.combiner import Combiner
from sheaf_core.errors import ConfigError, PluginError
from sheaf_core.names import NAME_PATTERN, check_not_reserved
from sheaf_core.registry import Registry


class PipelineNode(BaseModel):
    """A served model (given the pipeline's request) or a combiner (given its inputs'
    responses)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="A served model's name.")
    combiner: str | None = Field(default=None, description="A registered combiner's name.")
    inputs: list[str] = Field(default_factory=list,
                              description="Combiner only: the nodes whose answers it merges.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Combiner settings.")

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineNode:
        if (self.model is None) == (self.combiner is None):
            raise ValueError("set exactly one of model or combiner")
        if self.model is not None and (self.inputs or self.kwargs):
            raise ValueError("a model node takes the pipeline's request: no inputs or kwargs")
        if self.combiner is not None and not self.inputs:
            raise ValueError("a combiner node needs inputs")
        return self


class PipelineSpec(BaseModel):
    """One pipeline: served at /{name}/predict with the model type of its nodes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Route prefix: /{name}/predict.")
    nodes: dict[str, PipelineNode] = Field(min_length=1)
    output: str = Field(description="The node whose answer is the pipeline's.")
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="Deadline of the whole pipeline; defaults to server.request_timeout_s.")

    @model_validator(mode="after")
    def _a_dag_feeding_the_output(self) -> PipelineSpec:
        check_not_reserved(self.name)
        for name, node in self.nodes.items():
            for source in node.inputs:
                if source not in self.nodes:
                    raise ValueError(f"nodes.{name}.inputs: {source!r} is not a node of "
                                     f"this pipeline ({', '.join(self.nodes)})")
        if self.output not in self.nodes:
            raise ValueError(f"output: {self.output!r} is not a node of this pipeline")
        order = topological_order(self.nodes)
        used = {self.output}
        for name in reversed(order):
            if name in used:
                used.update(self.nodes[name].inputs)
        unused = [name for name in self.nodes if name not in used]
        if unused:
            raise ValueError(f"nodes {', '.join(unused)} do not feed the output "
                             f"{self.output!r}; remove them or add them to some inputs")
        return self


def topological_order(nodes: Mapping[str, PipelineNode]) -> list[str]:
    """Node names, each after its inputs; ValueError naming a cycle's nodes."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name):], name]
            raise ValueError(f"nodes form a cycle: {' → '.join(cycle)}")
        state[name] = "visiting"
        for source in nodes[name].inputs:
            visit(source, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in nodes:
        visit(name, [])
    return order


@dataclass(frozen=True)
class PipelinePlan:
    """A pipeline checked against what is served: run `order`; `combiners` are built."""

    spec: PipelineSpec
    model_type: str
    order: list[str]
    combiners: dict[str, Combiner[Any, Any]]

    @property
    def models(self) -> dict[str, str]:
        """Model node → served model name."""
        return {name: node.model for name, node in self.spec.nodes.items()
                if node.model is not None}


def plan_pipeline(spec: PipelineSpec, model_types: Mapping[str, str],
                  registry: Registry) -> PipelinePlan:
    """Check `spec` against the served models (name → model type) and the registry.
    ConfigError names the pipeline and the node at fault."""
    where = f"pipeline {spec.name!r}"
    types: dict[str, str] = {}
    combiners: dict[str, Combiner[Any, Any]] = {}
    for name, node in spec.nodes.items():
        at = f"{where}: nodes.{name}"
        if node.model is not None:
            if node.model not in model_types:
                raise ConfigError(f"{at}.model: {node.model!r} is not a served model; "
                                  f"served: {', '.join(sorted(model_types))}")
            types[name] = model_types[node.model]
            continue
        assert node.combiner is not None
        try:
            cls = registry.combiner(node.combiner)
        except PluginError as exc:
            raise ConfigError(f"{at}.combiner: {exc}") from None
        try:
            combiner = cls(**node.kwargs)
            combiner.check_inputs(node.inputs)
        except ValidationError as exc:
            lines = "; ".join(f"kwargs.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in exc.errors())
            raise ConfigError(f"{at}: {lines}") from None
        except ValueError as exc:
            raise ConfigError(f"{at}.kwargs: {exc}") from None
        combiners[name] = combiner
        types[name] = cls.model_type
    kinds = set(types.values())
    if len(kinds) != 1:
        listing = ", ".join(f"{name}: {kind}" for name, kind in types.items())
        raise ConfigError(f"{where}: nodes must share one model type, got {listing}")
    return PipelinePlan(spec, kinds.pop(), topological_order(spec.nodes), combiners)


def plan_pipelines(pipelines: Iterable[PipelineSpec], model_types: Mapping[str, str],
                   registry: Registry) -> list[PipelinePlan]:
    return [plan_pipeline(spec, model_types, registry) for spec in pipelines]
