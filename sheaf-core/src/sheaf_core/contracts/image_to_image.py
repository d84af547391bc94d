"""The `image_to_image` contract: an image transformed under a prompt — img2img, or
inpainting when a mask is given (SDXL and the like).

Compatible with sheaf-serve's MultimodalGenerationRequest/Response: the same field names
and defaults, and its `model_type` value `multimodal_generation` is accepted (and echoed)
as an alias. New here: `output_format`, and the checks below, each a 422 naming its field:
an image that is not base64, not an image, too large, or not a multiple of 8 pixels on a
side; a mask of another size than the image; `strength` * `num_inference_steps` leaving no
denoising step. The decoded image and mask ride on the request for the backend
(`decoded_image`, `decoded_mask`): uploads are decoded once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from sheaf_core.contracts._validation import field_errors
from sheaf_core.contracts.base import BaseRequest, BaseResponse
from sheaf_core.contracts.images import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    SIZE_MULTIPLE,
    ImageDecodeError,
    ImageFormat,
    ImageLimits,
    Prompt,
    SheafServeAdapters,
    decode_image,
)
from sheaf_core.contracts.limits import WorkLimits

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_STEPS = 500

ImageToImageType = Literal["image_to_image", "multimodal_generation"]


def denoising_steps(num_inference_steps: int, strength: float) -> int:
    """Steps img2img and inpainting really run: diffusers skips the first
    `(1 - strength)` of the schedule."""
    return min(int(num_inference_steps * strength), num_inference_steps)


class ImageToImageRequest(BaseRequest, SheafServeAdapters):
    """Transform `image_b64` (inside `mask_b64`'s white area, when given) towards `prompt`."""

    model_type: ImageToImageType = "image_to_image"
    Limits: ClassVar[type[WorkLimits]] = ImageLimits
    size_field: ClassVar[str] = "image_b64"

    prompt: Prompt
    image_b64: str = Field(description="The input image: PNG, JPEG or WebP, base64. Its size "
                           f"is the output's; each side a multiple of {SIZE_MULTIPLE}.")
    mask_b64: str | None = Field(
        default=None, description="Inpainting: white pixels are regenerated, black kept; "
        "the same size as the image. Absent: img2img.")
    strength: float = Field(
        default=0.8, ge=0.0, le=1.0,
        description="How far from the input to go: 0 keeps it, 1 ignores it. Steps run: "
        "int(num_inference_steps * strength), which must be at least 1.")
    num_inference_steps: int = Field(default=50, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=MAX_GUIDANCE)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="Absent: a random seed, reported in the response.")
    output_format: ImageFormat = ImageFormat.PNG
    stream_preview: bool = Field(
        default=False, description="With /stream: each progress event carries a small, "
        "rough preview of the image so far (`preview_b64`, PNG at 1/8 of the size).")

    _image: Image | None = PrivateAttr(default=None)
    _mask: Image | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_images(self) -> ImageToImageRequest:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        if denoising_steps(self.num_inference_steps, self.strength) < 1:
            problems.append((("strength",), f"strength {self.strength} * num_inference_steps "
                             f"{self.num_inference_steps} leaves no denoising step; raise "
                             "either so that their product is at least 1", self.strength))
        try:
            self._image = decode_image(self.image_b64, "RGB")
        except ImageDecodeError as exc:
            problems.append((("image_b64",), str(exc), "<image>"))
        else:
            width, height = self._image.size
            if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
                problems.append((("image_b64",), f"is {width}x{height}; each side must be a "
                                 f"multiple of {SIZE_MULTIPLE} pixels (resize or crop it)",
                                 "<image>"))
        if self.mask_b64 is not None:
            try:
                self._mask = decode_image(self.mask_b64, "L")
            except ImageDecodeError as exc:
                problems.append((("mask_b64",), str(exc), "<mask>"))
            else:
                if self._image is not None and self._mask.size != self._image.size:
                    problems.append((("mask_b64",), "is {}x{} but the image is {}x{}; send a "
                                     "mask of the image's size".format(
                                         *self._mask.size, *self._image.size), "<mask>"))
        field_errors(type(self).__name__, problems)
        return self

    @property
    def decoded_image(self) -> Image:
        assert self._image is not None  # set by validation
        return self._image

    @property
    def decoded_mask(self) -> Image | None:
        return self._mask

    @property
    def inpainting(self) -> bool:
        return self.mask_b64 is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the input image, which the output has too."""
        return self.decoded_image.size

    @property
    def steps_run(self) -> int:
        return denoising_steps(self.num_inference_steps, self.strength)

    def deterministic(self) -> bool:
        """Without a seed the server picks a random one: never answered from the cache."""
        return self.seed is not None


class ImageToImageResponse(BaseResponse):
    """The transformed image, its size and format, and the seed that reproduces it."""

    model_type: ImageToImageType = "image_to_image"
    image_b64: str
    width: int
    height: int
    seed: int
    output_format: ImageFormat = ImageFormat.PNG
    mode: Literal["img2img", "inpaint"] = Field(
        default="img2img", description="inpaint when the request had a mask.")
