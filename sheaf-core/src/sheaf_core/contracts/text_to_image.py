"""The `text_to_image` contract: images from a prompt (FLUX and the like).

Compatible with sheaf-serve's DiffusionRequest/DiffusionResponse: the same field names and
defaults, and its `model_type` value `diffusion` is accepted (and echoed) as an alias.
New here: `num_images` and `output_format`. The first image is the response's `image_b64`
and `seed`, as before; further ones are in `additional_images`, each with its own seed.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.images import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    SIZE_MULTIPLE,
    GeneratedImage,
    ImageFormat,
    ImageLimits,
    Prompt,
    SheafServeAdapters,
)
from sheaf_core.contracts.limits import WorkLimits

MAX_STEPS = 200

TextToImageType = Literal["text_to_image", "diffusion"]


def _side(default: int, what: str) -> Any:
    return Field(default=default, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE,
                 description=f"Image {what} in pixels; a multiple of {SIZE_MULTIPLE} (FLUX: "
                 "of 16).")


class TextToImageRequest(BaseRequest, SheafServeAdapters):
    """Generate `num_images` images of `prompt`."""

    model_type: TextToImageType = "text_to_image"
    Limits: ClassVar[type[WorkLimits]] = ImageLimits
    size_field: ClassVar[str] = "width"

    prompt: Prompt
    negative_prompt: str = Field(
        default="", max_length=MAX_PROMPT_CHARS,
        description="What to avoid; models without it (FLUX schnell) ignore it.")
    height: int = _side(1024, "height")
    width: int = _side(1024, "width")
    num_inference_steps: int = Field(
        default=4, ge=1, le=MAX_STEPS,
        description="Denoising steps: FLUX schnell is made for 1-4, FLUX dev for 20-50.")
    guidance_scale: float = Field(
        default=0.0, ge=0.0, le=MAX_GUIDANCE,
        description="How closely to follow the prompt (schnell: 0, dev: about 3.5).")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED,
        description="Makes the result reproducible; image i uses seed + i. Absent: a random "
        "seed, reported in the response.")
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    output_format: ImageFormat = ImageFormat.PNG
    stream_preview: bool = Field(
        default=False, description="With /stream: each progress event carries a small, "
        "rough preview of the image so far (`preview_b64`, PNG at 1/8 of the size).")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of each image."""
        return self.width, self.height

    @property
    def steps_run(self) -> int:
        return self.num_inference_steps

    def deterministic(self) -> bool:
        """Without a seed the server picks a random one: never answered from the cache."""
        return self.seed is not None


class TextToImageResponse(BaseResponse):
    """The images, their size and format, and the seeds that reproduce them."""

    model_type: TextToImageType = "text_to_image"
    image_b64: str = Field(description="The first image, base64.")
    seed: int = Field(description="The first image's seed.")
    width: int
    height: int
    output_format: ImageFormat = ImageFormat.PNG
    additional_images: list[GeneratedImage] = Field(
        default_factory=list, description="Images 2..num_images, in order.")

    def all_images(self) -> list[GeneratedImage]:
        """Every image of the response, first one included."""
        return [GeneratedImage(image_b64=self.image_b64, seed=self.seed),
                *self.additional_images]
