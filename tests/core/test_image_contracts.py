"""The text_to_image and image_to_image contracts: sheaf-serve compatibility, bounds, and
422s that name the field at fault — including images that cannot be used."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from pydantic import ValidationError

from sheaf_core.contracts.image_to_image import ImageToImageRequest, ImageToImageResponse
from sheaf_core.contracts.images import MAX_SIDE, decode_image, encode_image, image_seeds
from sheaf_core.contracts.text_to_image import TextToImageRequest, TextToImageResponse
from sheaf_core.registry import discover


def fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"] if "[" not in str(p)) for e in exc.errors()}


def png(width: int = 64, height: int = 64, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- text_to_image ------------------------------------------------------------------------------

def test_a_sheaf_serve_diffusion_request_validates_unchanged() -> None:
    body = {"model_type": "diffusion", "prompt": "a lighthouse", "negative_prompt": "",
            "height": 512, "width": 768, "num_inference_steps": 4, "guidance_scale": 0.0,
            "seed": 42}
    request = TextToImageRequest.model_validate(body)
    assert (request.model_type, request.width, request.num_images) == ("diffusion", 768, 1)
    assert TextToImageRequest(prompt="x").model_type == "text_to_image"


def test_a_response_reads_like_sheaf_serve_s_and_lists_every_image() -> None:
    response = TextToImageResponse(image_b64="AAAA", seed=7, width=64, height=64,
                                   additional_images=[{"image_b64": "BBBB", "seed": 8}])
    dumped = response.model_dump()
    assert {"image_b64", "seed", "width", "height"} <= dumped.keys()
    assert [(i.image_b64, i.seed) for i in response.all_images()] == [("AAAA", 7), ("BBBB", 8)]


@pytest.mark.parametrize("patch, field", [
    ({"prompt": "   "}, "prompt"),
    ({"height": 100}, "height"),          # not a multiple of 8
    ({"width": 32}, "width"),             # below the minimum
    ({"width": MAX_SIDE + 8}, "width"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 201}, "num_inference_steps"),
    ({"num_images": 9}, "num_images"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"output_format": "gif"}, "output_format"),
    ({"model_type": "time_series"}, "model_type"),
])
def test_text_to_image_bounds_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TextToImageRequest.model_validate({"prompt": "a cat", **patch})
    assert fields(info.value) == {field}


def test_image_seeds_follow_the_request_seed_and_wrap() -> None:
    assert image_seeds(7, 3) == [7, 8, 9]
    assert image_seeds(2**32 - 1, 2) == [2**32 - 1, 0]


# -- image_to_image -----------------------------------------------------------------------------

def test_a_sheaf_serve_multimodal_request_validates_and_carries_the_decoded_images() -> None:
    body = {"model_type": "multimodal_generation", "prompt": "watercolour", "image_b64": png(),
            "mask_b64": png(mode="L"), "strength": 0.8, "num_inference_steps": 50,
            "guidance_scale": 7.5, "negative_prompt": "", "seed": 3}
    request = ImageToImageRequest.model_validate_json(ImageToImageRequest.model_validate(
        body).model_dump_json())
    assert request.model_type == "multimodal_generation" and request.inpainting
    assert request.decoded_image.size == (64, 64) and request.decoded_image.mode == "RGB"
    assert request.decoded_mask is not None and request.decoded_mask.mode == "L"
    img2img = ImageToImageRequest(prompt="x", image_b64=png())
    assert not img2img.inpainting and img2img.decoded_mask is None
    assert ImageToImageResponse(image_b64="A", width=8, height=8, seed=1).mode == "img2img"


@pytest.mark.parametrize("patch, field, words", [
    ({"image_b64": "not base64!"}, "image_b64", "not valid base64"),
    ({"image_b64": base64.b64encode(b"hello, not an image").decode()}, "image_b64",
     "could not be decoded"),
    ({"image_b64": png(MAX_SIDE + 8, 8)}, "image_b64", "largest side"),
    ({"image_b64": png(60, 64)}, "image_b64", "multiple of 8"),
    ({"mask_b64": png(32, 32, "L")}, "mask_b64", "image's size"),
    ({"mask_b64": "%%%"}, "mask_b64", "not valid base64"),
    ({"strength": 0.1, "num_inference_steps": 5}, "strength", "no denoising step"),
    ({"strength": 1.5}, "strength", "less than or equal"),
    ({"num_inference_steps": 501}, "num_inference_steps", "less than or equal"),
])
def test_image_to_image_problems_name_the_field(patch: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        ImageToImageRequest.model_validate({"prompt": "x", "image_b64": png(), **patch})
    assert fields(info.value) == {field}
    assert words in str(info.value)


def test_encoded_images_decode_in_every_format() -> None:
    picture = Image.new("RGB", (16, 8), (200, 10, 10))
    for fmt in ("png", "jpeg", "webp"):
        again = decode_image(encode_image(picture, fmt))
        assert again.size == (16, 8)


def test_the_image_contracts_are_registered_by_sheaf_core() -> None:
    registry = discover()
    assert {"text_to_image", "image_to_image"} <= registry.contracts.keys()
    assert registry.contracts["text_to_image"].plugin.distribution == "sheaf-core"
