"""A pipeline is served like a model on both hosts: the diamond — the request fans out to a
tiny Chronos-Bolt (built here, loaded through chronos' real `from_pretrained`) and the
baseline, and the weighted ensemble combines their quantile forecasts. Tier 1 runs it in
process; Ray runs each node as a deployment wired by handles; both give the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosts import Flag, Host

from sheaf_backend_chronos.testing import save_tiny_bolt
from sheaf_core import ModelSpec, PipelineSpec
from sheaf_server.testing import wait_until_ready

BODY = {"history": [10.0, 12.0, 11.0, 13.0, 12.0, 14.0, 13.0, 15.0], "horizon": 3,
        "output_mode": "quantiles", "quantile_levels": [0.1, 0.5, 0.9]}
WEIGHTS = {"chronos": 0.75, "baseline": 0.25}
DIAMOND = PipelineSpec.model_validate({
    "name": "ensemble", "output": "mix", "nodes": {
        "chronos": {"model": "chronos"}, "baseline": {"model": "baseline"},
        "mix": {"combiner": "weighted_ensemble", "inputs": ["chronos", "baseline"],
                "kwargs": {"weights": WEIGHTS}}}})


@pytest.fixture(scope="module")
def bolt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bolt(tmp_path_factory.mktemp("bolt"))


def models(bolt_dir: Path) -> list[ModelSpec]:
    return [ModelSpec(name="chronos", backend="chronos", resources={"num_cpus": 0.5},
                      backend_kwargs={"model_id": str(bolt_dir)}),
            ModelSpec(name="baseline", backend="baseline", resources={"num_cpus": 0.5},
                      backend_kwargs={"season_length": 2})]


def weighted(parts: dict[str, list[float]]) -> list[float]:
    return [sum(WEIGHTS[name] * values[i] for name, values in parts.items())
            for i in range(len(next(iter(parts.values()))))]


def serve_diamond(host: Host, bolt_dir: Path) -> dict[str, dict]:
    """The pipeline's answer and its members' own answers to the same request."""
    with host.serve(*models(bolt_dir), pipelines=[DIAMOND]) as client:
        answers = {}
        for name in ("chronos", "baseline", "ensemble"):
            response = client.post(f"/{name}/predict", json=BODY)
            assert response.status_code == 200, response.text
            answers[name] = response.json()
        refused = client.post("/ensemble/predict", json={**BODY, "output_mode": "samples",
                                                        "request_id": "s-1"})
        assert refused.status_code == 422 and refused.json()["request_id"] == "s-1"
        assert refused.json()["details"][0]["field"] == "output_mode"
        listing = client.get("/models/ensemble").json()
        assert listing["kind"] == "pipeline" and listing["state"] == "ready"
        operation = client.get("/openapi.json").json()["paths"]["/ensemble/predict"]["post"]
        assert "weighted_ensemble" in operation["summary"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TimeSeriesResponse"}
        return answers


def test_the_diamond_ensembles_its_members_answers(host: Host, bolt_dir: Path) -> None:
    answers = serve_diamond(host, bolt_dir)
    ensemble = answers["ensemble"]
    assert ensemble["model_name"] == "ensemble"
    members = {name: answers[name] for name in WEIGHTS}
    assert ensemble["mean"] == pytest.approx(weighted({n: a["mean"] for n, a in members.items()}))
    for level in ("0.1", "0.5", "0.9"):
        assert ensemble["quantiles"][level] == pytest.approx(
            weighted({n: a["quantiles"][level] for n, a in members.items()}))


def test_both_hosts_give_the_same_answer(request: pytest.FixtureRequest,
                                         bolt_dir: Path) -> None:
    local = serve_diamond(Host("asgi", request), bolt_dir)["ensemble"]
    on_ray = serve_diamond(Host("ray", request), bolt_dir)["ensemble"]
    assert on_ray["mean"] == pytest.approx(local["mean"], rel=1e-6)
    assert on_ray["quantiles"] == {level: pytest.approx(values, rel=1e-6)
                                   for level, values in local["quantiles"].items()}


def test_a_pipeline_is_not_ready_until_its_models_are(host: Host, flag: Flag) -> None:
    gate = flag("load")
    slow = ModelSpec(name="slow", backend="test", resources={"num_cpus": 0.5},
                     backend_kwargs={"gate": gate})
    fast = ModelSpec(name="fast", backend="test", resources={"num_cpus": 0.5})
    pipeline = PipelineSpec.model_validate({
        "name": "both", "output": "mix", "nodes": {
            "slow": {"model": "slow"}, "fast": {"model": "fast"},
            "mix": {"combiner": "weighted_ensemble", "inputs": ["slow", "fast"]}}})
    # fast first: in one process models load one at a time, in the config's order
    with host.serve(fast, slow, pipelines=[pipeline], wait_ready=False) as client:
        wait_until_ready(client, 60, path="/fast/ready")
        waiting = client.get("/both/ready")
        assert waiting.status_code == 503 and "slow" in waiting.json()["reason"]
        assert client.post("/both/predict", json=BODY).status_code == 503
        Path(gate).touch()
        wait_until_ready(client, 60, path="/both/ready")
        assert client.post("/both/predict", json=BODY).json()["mean"] == [15.0] * 3
