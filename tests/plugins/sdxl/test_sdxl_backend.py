"""The sdxl backend on a tiny SDXL pipeline built and saved here, loaded through diffusers'
real `StableDiffusionXLImg2ImgPipeline.from_pretrained` (inpainting through `from_pipe`),
alone and behind a real server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from image_support import (
    ImageConformance,
    assert_same_image,
    pixels,
    png_b64,
    serving,
    sse_events,
)

from sheaf_backend_sdxl.backend import SdxlBackend
from sheaf_backend_sdxl.testing import save_tiny_sdxl
from sheaf_core import ModelSpec
from sheaf_core.contracts.image_to_image import ImageToImageRequest

PICTURE = png_b64(64, 64, seed=1)
MASK = png_b64(64, 64, mode="L", seed=2)
FAST = {"num_inference_steps": 4, "strength": 0.5}


def request(**fields: Any) -> ImageToImageRequest:
    return ImageToImageRequest(**{"prompt": "a watercolour", "image_b64": PICTURE, **FAST,
                                  **fields})


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="module")
def sdxl(sdxl_dir: Path) -> SdxlBackend:
    backend = SdxlBackend(model_id=str(sdxl_dir), device="cpu")
    backend.load()
    return backend


class TestSdxlConformance(ImageConformance):
    backend_name = "sdxl"

    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return {"model_id": str(save_tiny_sdxl(tmp_path_factory.mktemp("sdxl")))}

    @pytest.fixture
    def sample_requests(self) -> list[ImageToImageRequest]:
        return [request(seed=1), request(seed=2, mask_b64=MASK),
                request(seed=3, prompt="an oil painting", output_format="webp"),
                request(seed=4, image_b64=png_b64(96, 64, seed=5))]


def test_the_output_has_the_input_s_size_and_reports_mode_and_seed(sdxl: SdxlBackend) -> None:
    wide = png_b64(96, 64, seed=3)
    img2img, inpaint = sdxl.predict([request(image_b64=wide, seed=8),
                                     request(image_b64=wide, mask_b64=png_b64(96, 64, "L"),
                                             seed=9)])
    assert pixels(img2img.image_b64).shape == (64, 96, 3)
    assert (img2img.width, img2img.height, img2img.mode, img2img.seed) == (96, 64, "img2img", 8)
    assert (inpaint.mode, inpaint.seed) == ("inpaint", 9)


def test_a_request_gets_the_same_image_alone_or_batched_in_both_modes(
        sdxl: SdxlBackend) -> None:
    mine = [request(seed=11), request(seed=12, mask_b64=MASK)]
    others = [request(seed=13, prompt="other"), request(seed=14, mask_b64=MASK, prompt="x")]
    batched = sdxl.predict([others[0], mine[0], others[1], mine[1]])
    for wanted, got in zip(mine, [batched[1], batched[3]], strict=True):
        assert_same_image(sdxl.predict([wanted])[0].image_b64, got.image_b64)


def test_compatible_requests_share_one_call_and_modes_never_mix(sdxl: SdxlBackend) -> None:
    batch_sizes: list[int] = []
    hook = sdxl.img2img.unet.register_forward_pre_hook(
        lambda _module, args: batch_sizes.append(args[0].shape[0]))
    try:
        no_guidance = {"guidance_scale": 1.0}  # without CFG the unet batch is the image count
        sdxl.predict([request(seed=1, **no_guidance), request(seed=2, **no_guidance),
                      request(seed=3, mask_b64=MASK, **no_guidance),
                      request(seed=4, **no_guidance)])
    finally:
        hook.remove()
    # strength 0.5 of 4 steps = 2 denoising steps per call: img2img x3, then inpaint x1
    assert batch_sizes == [3, 3, 1, 1]


def test_the_inpainting_pipeline_shares_the_img2img_weights(sdxl: SdxlBackend) -> None:
    assert sdxl.inpaint.unet is sdxl.img2img.unet and sdxl.inpaint.vae is sdxl.img2img.vae


def test_both_pipelines_keep_the_dtype_they_were_loaded_in(sdxl_dir: Path) -> None:
    """bf16 here stands for a CUDA machine's `auto` dtype: diffusers' `from_pipe` casts the
    modules it shares to float32 unless told, which ran SDXL in float32 on the GPU (found
    by bench/image_cuda_check.py on an H100)."""
    backend = SdxlBackend(model_id=str(sdxl_dir), device="cpu", dtype="bfloat16")
    backend.load()
    assert backend.img2img.unet.dtype == backend.inpaint.unet.dtype == torch.bfloat16
    assert backend.describe()["dtype"] == "bfloat16"
    [answer] = backend.predict([request(seed=1, mask_b64=MASK)])
    assert pixels(answer.image_b64).shape == (64, 64, 3)


# -- behind a real server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(sdxl_dir: Path) -> Iterator[httpx.Client]:
    spec = ModelSpec(name="sdxl", backend="sdxl",
                     backend_kwargs={"model_id": str(sdxl_dir), "device": "cpu"},
                     batching={"max_batch_size": 8, "max_wait_ms": 100})
    with serving(spec) as client:
        yield client


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a watercolour", "image_b64": PICTURE, **FAST, **fields}


def test_predict_over_http_in_both_modes(server: httpx.Client) -> None:
    for mask, mode in ((None, "img2img"), (MASK, "inpaint")):
        response = server.post("/sdxl/predict", json=body(seed=5, mask_b64=mask),
                               headers={"X-Request-ID": f"sdxl-{mode}"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["request_id"], answer["mode"], answer["seed"]) == (f"sdxl-{mode}",
                                                                          mode, 5)
        assert pixels(answer["image_b64"]).shape == (64, 64, 3)


def test_a_sheaf_serve_multimodal_body_is_answered_as_such(server: httpx.Client) -> None:
    response = server.post("/sdxl/predict", json=body(model_type="multimodal_generation"))
    assert response.status_code == 200 and response.json()["model_type"] == \
        "multimodal_generation"


@pytest.mark.parametrize("patch, field", [
    ({"strength": 0.1, "num_inference_steps": 5}, "strength"),   # no denoising step left
    ({"mask_b64": png_b64(32, 32, "L")}, "mask_b64"),            # not the image's size
    ({"image_b64": "bm90IGFuIGltYWdl"}, "image_b64"),             # base64 of "not an image"
    ({"image_b64": png_b64(60, 64)}, "image_b64"),               # not a multiple of 8
    ({"image_b64": png_b64(4104, 8)}, "image_b64"),              # a side over 4096
    ({"num_inference_steps": 501}, "num_inference_steps"),
])
def test_bad_requests_get_a_422_naming_the_field(server: httpx.Client, patch: dict,
                                                 field: str) -> None:
    response = server.post("/sdxl/predict", json=body(**patch))
    assert response.status_code == 422, response.text
    assert field in {d["field"] for d in response.json()["details"]}


def test_stream_sends_each_denoising_step_then_the_result(server: httpx.Client) -> None:
    streamed = body(seed=6, num_inference_steps=6, strength=0.5, mask_b64=MASK)
    with server.stream("POST", "/sdxl/stream", json=streamed) as response:
        assert response.status_code == 200
        events = list(sse_events(response))
    assert [kind for kind, _ in events] == ["progress"] * 3 + ["result"]
    assert [(d["step"], d["total"]) for _, d in events[:3]] == [(1, 3), (2, 3), (3, 3)]
    predicted = server.post("/sdxl/predict", json=streamed).json()
    assert_same_image(events[-1][1]["image_b64"], predicted["image_b64"])


def test_concurrent_requests_batch_by_input_size(server: httpx.Client) -> None:
    bodies = [body(seed=i, image_b64=png_b64(64 + 32 * (i % 2), 64, seed=i)) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: server.post("/sdxl/predict", json=b), bodies))
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["width"] for r in responses] == [64 + 32 * (i % 2) for i in range(8)]
    listing = server.get("/models/sdxl").json()
    assert listing["batching"]["bucket_by"] == list(SdxlBackend.batch_keys)
    assert listing["stats"]["max_batch_size"] > 1


def test_stream_previews_are_small_pictures_when_asked_for(server: httpx.Client) -> None:
    with server.stream("POST", "/sdxl/stream",
                       json=body(seed=3, stream_preview=True)) as response:
        progress = [data for kind, data in sse_events(response) if kind == "progress"]
    assert len(progress) == 2  # 4 steps x strength 0.5
    assert all(pixels(p["preview_b64"]).shape == (8, 8, 3) for p in progress)


def test_generation_stops_at_its_deadline_at_the_next_denoising_step(
        sdxl: SdxlBackend) -> None:
    import time

    from sheaf_core.deadlines import DeadlinePassed, running_until

    for mask in (None, MASK):
        with running_until(time.monotonic() - 1), pytest.raises(DeadlinePassed):
            sdxl.predict([request(seed=1, mask_b64=mask)])
