"""The flux backend on a tiny FLUX pipeline built and saved here, loaded through diffusers'
real `FluxPipeline.from_pretrained`, alone and behind a real server."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from image_support import ImageConformance, assert_same_image, pixels, serving, sse_events

from sheaf_backend_flux.backend import FluxBackend
from sheaf_backend_flux.testing import save_tiny_flux
from sheaf_core import InvalidRequest, ModelSpec, hookimpl
from sheaf_core.contracts.images import decode_image
from sheaf_core.contracts.text_to_image import TextToImageRequest

SMALL = {"height": 64, "width": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_flux(tmp_path_factory.mktemp("flux"))


@pytest.fixture(scope="module")
def flux(flux_dir: Path) -> FluxBackend:
    backend = FluxBackend(model_id=str(flux_dir), device="cpu")
    backend.load()
    return backend


class TestFluxConformance(ImageConformance):
    backend_name = "flux"

    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return {"model_id": str(save_tiny_flux(tmp_path_factory.mktemp("flux")))}

    @pytest.fixture
    def sample_requests(self) -> list[TextToImageRequest]:
        return [TextToImageRequest(prompt="a red boat", seed=1, **SMALL),
                TextToImageRequest(prompt="a green hill at dawn", seed=2, num_images=2, **SMALL),
                TextToImageRequest(prompt="a red boat", seed=3, output_format="jpeg", **SMALL)]


def test_a_request_gets_its_size_format_and_seed(flux: FluxBackend) -> None:
    request = TextToImageRequest(prompt="a lighthouse", seed=11, output_format="webp",
                                 height=64, width=96, num_inference_steps=2)
    response = flux.predict([request])[0]
    image = decode_image(response.image_b64)
    assert pixels(response.image_b64).shape == (64, 96, 3) and image.size == (96, 64)
    assert base64.b64decode(response.image_b64)[8:12] == b"WEBP"
    assert (response.seed, response.width, response.height) == (11, 96, 64)


def test_without_a_seed_one_is_drawn_and_reported_so_the_image_can_be_made_again(
        flux: FluxBackend) -> None:
    first = flux.predict([TextToImageRequest(prompt="a fox", **SMALL)])[0]
    again = flux.predict([TextToImageRequest(prompt="a fox", seed=first.seed, **SMALL)])[0]
    assert_same_image(first.image_b64, again.image_b64)


def test_image_i_of_a_request_is_the_image_of_seed_plus_i_alone_or_batched(
        flux: FluxBackend) -> None:
    many = TextToImageRequest(prompt="a castle", seed=40, num_images=3, **SMALL)
    batched = flux.predict([TextToImageRequest(prompt="noise", seed=5, **SMALL), many])[1]
    assert [i.seed for i in batched.all_images()] == [40, 41, 42]
    for image in batched.all_images():
        alone = flux.predict([TextToImageRequest(prompt="a castle", seed=image.seed,
                                                 **SMALL)])[0]
        assert_same_image(image.image_b64, alone.image_b64)
    different = flux.predict([TextToImageRequest(prompt="a castle", seed=99, **SMALL)])[0]
    assert np.abs(pixels(different.image_b64) - pixels(batched.image_b64)).max() > 1


def test_compatible_requests_are_generated_in_one_pipeline_call(flux: FluxBackend) -> None:
    batch_sizes: list[int] = []
    hook = flux.pipe.transformer.register_forward_pre_hook(
        lambda _module, args, kwargs: batch_sizes.append(kwargs["hidden_states"].shape[0]),
        with_kwargs=True)
    try:
        flux.predict([TextToImageRequest(prompt="a", seed=1, **SMALL),
                      TextToImageRequest(prompt="b", seed=2, num_images=2, **SMALL),
                      TextToImageRequest(prompt="c", seed=3, **{**SMALL, "height": 96})])
    finally:
        hook.remove()
    # two steps per call: one call of 3 images (64x64), one of 1 (96x64)
    assert batch_sizes == [3, 3, 1, 1]


def test_a_large_batch_is_split_at_max_images_per_call(flux_dir: Path) -> None:
    backend = FluxBackend(model_id=str(flux_dir), max_images_per_call=2)
    backend.load()
    batch_sizes: list[int] = []
    backend.pipe.transformer.register_forward_pre_hook(
        lambda _module, args, kwargs: batch_sizes.append(kwargs["hidden_states"].shape[0]),
        with_kwargs=True)
    responses = backend.predict([TextToImageRequest(prompt="a", seed=1, num_images=5, **SMALL)])
    assert len(responses[0].all_images()) == 5
    assert batch_sizes == [2, 2, 2, 2, 1, 1]


def test_a_dev_style_checkpoint_follows_guidance_scale(tmp_path: Path) -> None:
    backend = FluxBackend(model_id=str(save_tiny_flux(tmp_path / "dev", guidance_embeds=True)))
    backend.load()
    assert backend.describe()["guidance_embeds"] is True
    low, high = backend.predict([TextToImageRequest(prompt="a fox", seed=4, guidance_scale=g,
                                                    **SMALL) for g in (1.0, 30.0)])
    assert np.abs(pixels(low.image_b64) - pixels(high.image_b64)).max() > 1


def test_sizes_must_be_a_multiple_of_what_the_model_needs(flux: FluxBackend) -> None:
    assert flux.size_multiple == 16
    with pytest.raises(InvalidRequest) as info:
        flux.validate_request(TextToImageRequest(prompt="x", height=72, width=64))
    assert [p.field for p in info.value.problems] == ["height"]
    assert "multiple of 16" in info.value.problems[0].message


def test_settings_errors_name_the_setting(flux_dir: Path) -> None:
    backend = FluxBackend(model_id=str(flux_dir), device="cpu", cpu_offload="model")
    with pytest.raises(ValueError, match="cpu_offload"):
        backend.load()


# -- behind a real server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(flux_dir: Path) -> Iterator[httpx.Client]:
    spec = ModelSpec(name="flux", backend="flux",
                     backend_kwargs={"model_id": str(flux_dir), "device": "cpu"},
                     batching={"max_batch_size": 8, "max_wait_ms": 100})
    with serving(spec) as client:
        yield client


def test_predict_over_http_returns_a_decodable_image(server: httpx.Client) -> None:
    response = server.post("/flux/predict", json={"prompt": "a boat", "seed": 3, **SMALL},
                           headers={"X-Request-ID": "img-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["request_id"], body["model_name"], body["seed"]) == ("img-1", "flux", 3)
    assert pixels(body["image_b64"]).shape == (64, 64, 3)


def test_a_sheaf_serve_diffusion_body_is_answered_as_diffusion(server: httpx.Client) -> None:
    response = server.post("/flux/predict", json={"model_type": "diffusion", "prompt": "x",
                                                  "seed": 1, **SMALL})
    assert response.status_code == 200 and response.json()["model_type"] == "diffusion"


@pytest.mark.parametrize("patch, field", [
    ({"height": 72}, "height"),                # the model's multiple (16), not the contract's
    ({"num_images": 9}, "num_images"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": ""}, "prompt"),
])
def test_bad_requests_get_a_422_naming_the_field(server: httpx.Client, patch: dict,
                                                 field: str) -> None:
    response = server.post("/flux/predict", json={"prompt": "x", **SMALL, **patch})
    assert response.status_code == 422, response.text
    assert field in {problem["field"] for problem in response.json()["details"]}


def test_concurrent_requests_batch_by_size_and_steps(server: httpx.Client) -> None:
    bodies = [{"prompt": f"p{i}", "seed": i, **SMALL, "width": 64 + 16 * (i % 2)}
              for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: server.post("/flux/predict", json=b), bodies))
    assert [r.status_code for r in responses] == [200] * 8
    assert [pixels(r.json()["image_b64"]).shape[1] for r in responses] == \
        [b["width"] for b in bodies]
    listing = server.get("/models/flux").json()
    # the backend's batch_keys joined the model's bucket_by: batches of one size each
    assert listing["batching"]["bucket_by"] == list(FluxBackend.batch_keys)
    assert listing["stats"]["max_batch_size"] > 1


# -- streaming ----------------------------------------------------------------------------------

def test_stream_sends_each_step_then_the_result_predict_would_give(
        server: httpx.Client) -> None:
    body = {"prompt": "a kite", "seed": 21, **{**SMALL, "num_inference_steps": 3},
            "num_images": 2}
    with server.stream("POST", "/flux/stream", json=body,
                       headers={"X-Request-ID": "s-1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    kinds = [kind for kind, _ in events]
    assert kinds == ["progress"] * 3 + ["result"]
    assert [data["step"] for _, data in events[:3]] == [1, 2, 3]
    assert {data["total"] for _, data in events[:3]} == {3}
    result = events[-1][1]
    assert (result["request_id"], result["seed"]) == ("s-1", 21)
    predicted = server.post("/flux/predict", json=body).json()
    assert_same_image(result["image_b64"], predicted["image_b64"])
    assert_same_image(result["additional_images"][0]["image_b64"],
                      predicted["additional_images"][0]["image_b64"])


def test_stream_errors_before_it_starts_are_plain_422s(server: httpx.Client) -> None:
    response = server.post("/flux/stream", json={"prompt": "x", **SMALL, "height": 72})
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["details"]] == ["height"]


STEPS_SEEN: list[int] = []


class CountingFlux(FluxBackend):
    """The real flux backend, counting the denoising steps its transformer runs."""

    def load(self) -> None:
        super().load()
        self.pipe.transformer.register_forward_pre_hook(lambda *_: STEPS_SEEN.append(1))


class CountingPlugin:
    @hookimpl
    def sheaf_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("counting-flux", CountingFlux)


def test_a_client_that_disconnects_stops_the_generation_at_the_next_step(
        flux_dir: Path) -> None:
    spec = ModelSpec(name="slow", backend="counting-flux",
                     backend_kwargs={"model_id": str(flux_dir), "device": "cpu"})
    steps = 200  # the contract's most
    with serving(spec, plugins=(CountingPlugin(),)) as client:
        body = {"prompt": "a long walk", "seed": 1, "height": 128, "width": 128,
                "num_inference_steps": steps}
        with client.stream("POST", "/slow/stream", json=body) as response:
            assert response.status_code == 200
            kind, first = next(sse_events(response))
            assert (kind, first["step"], first["total"]) == ("progress", 1, steps)
        # the connection is closed: the generation stops within a step or so
        seen = -1
        for _ in range(100):
            if len(STEPS_SEEN) == seen:
                break
            seen = len(STEPS_SEEN)
            time.sleep(0.2)
        assert seen < steps / 2, f"{seen} of {steps} steps ran after the client left"
        # and the model serves the next request
        after = client.post("/slow/predict", json={"prompt": "x", "seed": 2, **SMALL})
        assert after.status_code == 200


def test_stream_previews_are_small_pictures_when_asked_for(server: httpx.Client) -> None:
    body = {"prompt": "a kite", "seed": 2, **{**SMALL, "width": 128}, "stream_preview": True}
    with server.stream("POST", "/flux/stream", json=body) as response:
        events = list(sse_events(response))
    progress = [data for kind, data in events if kind == "progress"]
    assert len(progress) == 2
    assert all(pixels(p["preview_b64"]).shape == (8, 16, 3) for p in progress)  # 1/8 size
    with server.stream("POST", "/flux/stream", json={**body, "stream_preview": False}) as plain:
        assert all("preview_b64" not in data for kind, data in sse_events(plain)
                   if kind == "progress")


def test_generation_stops_at_its_deadline_at_the_next_denoising_step(
        flux: FluxBackend) -> None:
    import time

    from sheaf_core.deadlines import DeadlinePassed, running_until

    request = TextToImageRequest(prompt="a red boat", seed=1, **SMALL)
    with running_until(time.monotonic() - 1), pytest.raises(DeadlinePassed):
        flux.predict([request])
    with running_until(time.monotonic() - 1), pytest.raises(DeadlinePassed):
        list(flux.stream(request))  # the pipeline's own thread sees the deadline too
