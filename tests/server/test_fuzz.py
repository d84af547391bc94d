"""Schemathesis against a live server, as an attacker or a careless client would: thousands
of generated requests — valid and invalid — over every operation of the OpenAPI document.
No request may get a 5xx, and every response must match the schema it declares (a `null`
where a number is promised once slipped through).

Tier 1 serves every model family (the time-series models, FLUX, SDXL, GraphCast, and a
pipeline) with a few hundred examples per operation; Ray, the same engine behind another
host, gets fewer. The tiny random models diverge to NaN when rolled out past one model step
(their forecasts grow each step), which is a model's failure and rightly a 500 — so the
configs limit their horizons to one step (`limits.max_horizon`), as an operator would for a
model whose forecasts degrade past its prediction length.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_support import served
from hosts import Host

from sheaf_backend_chronos.testing import save_tiny_bolt, save_tiny_chronos2
from sheaf_backend_flux.testing import save_tiny_flux
from sheaf_backend_graphcast.testing import save_tiny_graphcast
from sheaf_backend_sdxl.testing import save_tiny_sdxl
from sheaf_core import ModelSpec, PipelineSpec

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
IMAGES = {"max_pixels": 128 * 128, "max_steps": 2, "max_images": 2}
ENSEMBLE = {"name": "ensemble", "output": "mix", "nodes": {
    "a": {"model": "baseline"}, "b": {"model": "bolt"},
    "mix": {"combiner": "weighted_ensemble", "inputs": ["a", "b"]}}}


def forecasters(root: Path) -> list[ModelSpec]:
    return [
        ModelSpec(name="baseline", backend="baseline", resources={"num_cpus": 0.25}),
        ModelSpec(name="bolt", backend="chronos", resources={"num_cpus": 0.25},
                  backend_kwargs={"model_id": str(save_tiny_bolt(root / "bolt"))},
                  limits={"max_horizon": 16}),  # its prediction length
        ModelSpec(name="chronos2", backend="chronos", resources={"num_cpus": 0.25},
                  backend_kwargs={"model_id": str(save_tiny_chronos2(root / "chronos2"))},
                  limits={"max_horizon": 32})]  # 4 output patches of 8


def fuzz(url: str, examples: int, workdir: Path) -> str:
    """Run schemathesis' CLI against `url`; its report (fails the test on any failure)."""
    ran = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks",
         "not_a_server_error,response_schema_conformance", "--max-examples", str(examples),
         "--seed", "14", "--request-timeout", "60", "--generation-database", "none",
         "--no-color"], capture_output=True, text=True, timeout=1200, cwd=workdir)
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report[-6000:]
    assert " generated" in report
    return report


def test_no_generated_request_gets_a_5xx_or_an_off_schema_answer_on_tier_1(
        tmp_path: Path) -> None:
    root = tmp_path / "models"
    models = [*forecasters(root),
              ModelSpec(name="flux", backend="flux", limits=IMAGES,
                        backend_kwargs={"model_id": str(save_tiny_flux(root / "flux"))}),
              ModelSpec(name="sdxl", backend="sdxl", limits=IMAGES,
                        backend_kwargs={"model_id": str(save_tiny_sdxl(root / "sdxl"))}),
              ModelSpec(name="weather", backend="graphcast", limits={"max_steps": 2},
                        backend_kwargs=save_tiny_graphcast(root / "weather"))]
    config = tmp_path / "sheaf.yaml"
    config.write_text(yaml.safe_dump({
        "models": [m.model_dump(mode="json", exclude_defaults=True) for m in models],
        "pipelines": [ENSEMBLE]}))
    with served(config, timeout=180) as server:
        report = fuzz(server.url, 300, tmp_path)
    print(report[-1500:])  # the summary: operations, phases, cases generated


def test_no_generated_request_gets_a_5xx_or_an_off_schema_answer_on_ray(
        host_ray: Host, tmp_path: Path) -> None:
    with host_ray.serve(*forecasters(tmp_path / "models"),
                        pipelines=[PipelineSpec.model_validate(ENSEMBLE)]) as client:
        report = fuzz(str(client.base_url).rstrip("/"), 40, tmp_path)
    print(report[-1500:])


@pytest.fixture
def host_ray(request: pytest.FixtureRequest) -> Host:
    return Host("ray", request)
