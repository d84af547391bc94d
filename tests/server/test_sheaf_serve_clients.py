"""sheaf-serve's own clients, unchanged, against a live Sheaf server: the migration promise.

The real sheaf-serve 0.13 is installed from the package registry into a venv of its own
(its `sheaf` package would clash with nothing here, but its client must run with its own
dependencies, as a user's would); `sheaf_serve_calls.py` runs there and drives a Sheaf server
holding a Chronos-Bolt, a FLUX and an SDXL model: predictions of every kind decode into
sheaf-serve's typed responses, its stream readers see `type`/`done` in every event, its
bodies' extra fields (`feature_ref: null`, `adapters: []`, a `model_name` other than the
route) are accepted, and a non-empty `adapters` is a 422 that says LoRA is not supported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from picture_support import assert_same_image, png_b64

from sheaf_backend_chronos.testing import save_tiny_bolt
from sheaf_backend_flux.testing import save_tiny_flux
from sheaf_backend_sdxl.testing import save_tiny_sdxl
from sheaf_core import ModelSpec
from sheaf_server import ModelServer
from sheaf_server.settings import SheafConfig
from sheaf_server.testing import wait_until_ready

SHEAF_SERVE = "sheaf-serve==0.13.0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sheaf_serve_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the real sheaf-serve (its dependencies pinned like ours, so pip takes
    them from its cache when it can)."""
    venv = tmp_path_factory.mktemp("sheaf-serve-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-c", str(ROOT / "constraints" / "dev.txt"), SHEAF_SERVE],
                   check=True, timeout=900)
    return python


@pytest.fixture(scope="module")
def calls(sheaf_serve_python: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("models")
    config = SheafConfig(models=[
        ModelSpec(name="chronos", backend="chronos",
                  backend_kwargs={"model_id": str(save_tiny_bolt(root / "bolt"))}),
        ModelSpec(name="flux", backend="flux",
                  backend_kwargs={"model_id": str(save_tiny_flux(root / "flux"))}),
        ModelSpec(name="sdxl", backend="sdxl",
                  backend_kwargs={"model_id": str(save_tiny_sdxl(root / "sdxl"))})])
    image = root / "image.b64"
    image.write_text(png_b64(64, 64, seed=4))
    with ModelServer(config, port=0, log_level="warning") as server:
        url = server.url or ""
        wait_until_ready(url, 120)
        ran = subprocess.run([str(sheaf_serve_python), str(Path(__file__).parent /
                                                           "sheaf_serve_calls.py"),
                              url, str(image)], capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        found: dict[str, Any] = json.loads(ran.stdout)
        found["ours"] = {name: httpx.post(f"{url}/{name}/predict", json=body,
                                          timeout=60).json() for name, body in (
            ("chronos", {"history": [10.0 + (i % 7) + 0.3 * i for i in range(40)],
                         "horizon": 6, "frequency": "1h"}),
            ("flux", {"prompt": "a red boat", "height": 64, "width": 64,
                      "num_inference_steps": 2, "seed": 3}))}
        return found


def test_time_series_predictions_decode_into_sheaf_serve_types(calls: dict[str, Any]) -> None:
    assert calls["mean"]["mean"] == pytest.approx(calls["ours"]["chronos"]["mean"], rel=1e-4)
    assert calls["async_mean"] == pytest.approx(calls["mean"]["mean"], rel=1e-4)
    assert len(calls["mean"]["request_id"]) == 36  # its UUID, echoed
    assert calls["quantiles"]["keys"] == ["0.1", "0.5", "0.9"]


def test_the_route_decides_whatever_model_name_its_body_carries(calls: dict[str, Any]) -> None:
    assert calls["mean"]["model_name"] == "chronos"
    assert calls["quantiles"]["model_name"] == "chronos"  # sent "my-old-deployment-name"


def test_image_predictions_decode_into_sheaf_serve_types(calls: dict[str, Any]) -> None:
    assert calls["flux"]["size"] == [64, 64] and calls["flux"]["seed"] == 3
    assert_same_image(calls["flux"]["image_b64"], calls["ours"]["flux"]["image_b64"])
    assert calls["sdxl"]["size"] == [64, 64] and calls["sdxl"]["seed"] == 5


def test_its_stream_readers_see_type_and_done_in_every_event(calls: dict[str, Any]) -> None:
    flux = calls["flux_stream"]
    assert [e["type"] for e in flux] == ["progress"] * 3 + ["result"]
    assert [e["done"] for e in flux] == [False] * 3 + [True]
    assert [e["step"] for e in flux[:3]] == [1, 2, 3]
    assert {e["total_steps"] for e in flux[:3]} == {3}
    assert calls["flux_stream_result"] == 3  # the result event is a DiffusionResponse
    assert calls["chronos_stream"] == [{"type": "result", "done": True}]
    assert calls["chronos_stream_mean"] == pytest.approx(calls["mean"]["mean"], rel=1e-4)


def test_health_ready_and_refusals_read_as_it_expects(calls: dict[str, Any]) -> None:
    assert calls["health"]["status"] == "ok" and calls["ready"]["ready"] is True
    assert calls["adapters"]["status"] == 422
    assert "LoRA adapters are not supported yet" in calls["adapters"]["detail"]
