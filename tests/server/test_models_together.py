"""Several model families in one server, started as users start it (`sheaf-server serve`).

FLUX, SDXL, Chronos-Bolt and Chronos-2 once broke each other while loading in one process —
diffusers' lazy imports and transformers' meta-device loads are not thread-safe — and the
server then said it was ready. Now loads take turns and each model must answer its own
warm-up requests before it serves: every start, every model answers what the same backend
answers alone in this process. A model that loads but cannot answer is reported failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cli_support import served
from picture_support import assert_same_image, png_b64

from sheaf_backend_chronos.testing import save_tiny_bolt, save_tiny_chronos2
from sheaf_backend_flux.testing import save_tiny_flux
from sheaf_backend_sdxl.testing import save_tiny_sdxl
from sheaf_core import ModelSpec
from sheaf_core.registry import discover
from sheaf_core.spec import build_backend
from sheaf_server import ModelServer
from sheaf_server.settings import SheafConfig
from sheaf_server.testing import wait_until_ready

STARTS = 5
HISTORY = [10.0 + (i % 7) + 0.3 * i for i in range(40)]
BODIES: dict[str, dict[str, Any]] = {
    "flux": {"prompt": "a red boat", "height": 64, "width": 64, "num_inference_steps": 2,
             "seed": 3},
    "sdxl": {"prompt": "an oil painting", "image_b64": png_b64(64, 64, seed=4),
             "strength": 0.5, "num_inference_steps": 4, "seed": 5},
    "bolt": {"history": HISTORY, "horizon": 6, "output_mode": "quantiles",
             "quantile_levels": [0.1, 0.5, 0.9]},
    "chronos2": {"history": HISTORY, "horizon": 6, "output_mode": "quantiles",
                 "quantile_levels": [0.1, 0.5, 0.9]},
}


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[ModelSpec]:
    root = tmp_path_factory.mktemp("models")
    saved = {"flux": ("flux", save_tiny_flux(root / "flux")),
             "sdxl": ("sdxl", save_tiny_sdxl(root / "sdxl")),
             "bolt": ("chronos", save_tiny_bolt(root / "bolt")),
             "chronos2": ("chronos", save_tiny_chronos2(root / "chronos2"))}
    return [ModelSpec(name=name, backend=backend, backend_kwargs={"model_id": str(path)})
            for name, (backend, path) in saved.items()]


@pytest.fixture(scope="module")
def alone(specs: list[ModelSpec]) -> dict[str, dict[str, Any]]:
    """What each backend answers loaded by itself in this process."""
    registry = discover()
    answers = {}
    for spec in specs:
        backend = build_backend(spec, registry)
        backend.load()
        contract = registry.contract(backend.model_type)
        request = contract.request.model_validate(BODIES[spec.name])
        answers[spec.name] = backend.predict([request])[0].model_dump(
            mode="json", exclude={"request_id", "model_name"})
        backend.close()
    return answers


def assert_same_answer(got: dict[str, Any], want: dict[str, Any]) -> None:
    got = {k: v for k, v in got.items() if k not in ("request_id", "model_name")}
    if "image_b64" in want:
        assert_same_image(got.pop("image_b64"), want["image_b64"])
        assert got == {k: v for k, v in want.items() if k != "image_b64"}
        return
    assert got.keys() == want.keys()
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-4, abs=1e-4)
    for level, values in want["quantiles"].items():
        assert got["quantiles"][level] == pytest.approx(values, rel=1e-4, abs=1e-4)


def test_four_model_families_load_together_and_answer_right_at_every_start(
        specs: list[ModelSpec], alone: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text(yaml.safe_dump(SheafConfig(models=specs).model_dump(mode="json")))
    for start in range(STARTS):
        with served(config, timeout=180) as running:  # waits for GET /ready: 200
            states = httpx.get(f"{running.url}/ready").json()["models"]
            assert {name: s["state"] for name, s in states.items()} == dict.fromkeys(
                BODIES, "ready"), (start, states)
            for name, body in BODIES.items():
                response = httpx.post(f"{running.url}/{name}/predict", json=body, timeout=60)
                assert response.status_code == 200, (start, name, response.text)
                assert_same_answer(response.json(), alone[name])
        assert "warming up" not in running.output  # the stage shows in /ready, not the log
        assert "load failed" not in running.output, running.output[-3000:]


def test_a_model_that_loads_but_cannot_answer_is_failed_not_ready(tmp_path: Path) -> None:
    """Weights that load and answer NaN: the warm-up catches it. /ready is 503 naming the
    model; its predictions are refused without Retry-After; the other model serves."""
    import torch
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    path = save_tiny_bolt(tmp_path / "corrupt")
    model = ChronosBoltModelForForecasting.from_pretrained(path)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    model.save_pretrained(path)
    config = SheafConfig(models=[
        ModelSpec(name="corrupt", backend="chronos", backend_kwargs={"model_id": str(path)}),
        ModelSpec(name="baseline", backend="baseline")])
    with ModelServer(config, port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "", timeout=30) as client:
        deadline = time.monotonic() + 60
        while client.get("/corrupt/ready").json()["state"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = client.get("/ready")
        assert ready.status_code == 503
        reason = ready.json()["models"]["corrupt"]["reason"]
        assert "warm-up" in reason and "not a valid TimeSeriesResponse" in reason, reason
        assert ready.json()["message"].startswith("not ready: corrupt (failed: ")
        refused = client.post("/corrupt/predict", json=BODIES["bolt"])
        assert refused.status_code == 503 and refused.json()["error"] == "model_failed"
        assert "retry-after" not in refused.headers
        assert client.post("/baseline/predict", json=BODIES["bolt"]).status_code == 200


def test_a_hot_swap_loads_beside_models_that_keep_answering_right(
        specs: list[ModelSpec], alone: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """A load (imports, from_pretrained) while other models predict in other threads: the
    swap must not disturb them, nor they it. Chronos-Bolt is swapped three times while
    FLUX and Chronos-2 answer without pause."""
    import threading

    with ModelServer(SheafConfig(models=specs), port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "", timeout=60) as client:
        wait_until_ready(client, 120)
        swapping = threading.Event()
        answers: list[tuple[str, int, dict[str, Any]]] = []

        def keep_asking() -> None:
            while not swapping.is_set():
                for name in ("flux", "chronos2"):
                    response = client.post(f"/{name}/predict", json=BODIES[name])
                    answers.append((name, response.status_code, response.json()))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        bolt = next(s for s in specs if s.name == "bolt")
        for generation in range(3):
            server.update(bolt.model_copy(update={"batching": {"max_wait_ms": generation}}))
        swapping.set()
        asker.join(60)
        assert client.get("/models/bolt").json()["generation"] == 3
        assert_same_answer(client.post("/bolt/predict", json=BODIES["bolt"]).json(),
                           alone["bolt"])
    assert answers
    for name, status, body in answers:
        assert status == 200, body
        assert_same_answer(body, alone[name])
