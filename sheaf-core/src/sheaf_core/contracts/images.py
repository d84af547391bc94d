"""Pieces the image contracts share: output formats, generated images, and the decoding of
images a client sends.

A client's image arrives as base64 text. It is decoded once, while the request is
validated — so an undecodable, oversized or mis-sized image is a 422 naming its field before
the request queues — and the decoded picture rides on the request (`decoded_image`) for the
backend. Pillow is imported only here and only when an image is decoded or encoded
(`pip install 'sheaf-core[images]'`; the image backends depend on it).
"""

from __future__ import annotations

import base64
import binascii
import io
import random
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sheaf_core.contracts._validation import field_errors
from sheaf_core.contracts.limits import WorkLimits, over_limit
from sheaf_core.errors import FieldProblem

if TYPE_CHECKING:
    from PIL.Image import Image

#: Largest side of a generated or uploaded image, in pixels.
MAX_SIDE = 4096
#: Smallest side of a generated image, in pixels.
MIN_SIDE = 64
#: Every size must be a multiple of this (the VAE's downsampling); backends may ask more.
SIZE_MULTIPLE = 8
#: Largest decoded upload, in bytes (the base64 text is a third larger).
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: Seeds are 32-bit so that every client and library can reproduce them.
MAX_SEED = 2**32 - 1
MAX_IMAGES = 8
MAX_PROMPT_CHARS = 10_000
MAX_GUIDANCE = 100.0
#: Pixels of one image a request may ask for by default (see `ImageLimits`): 2048x2048.
DEFAULT_MAX_PIXELS = 2048 * 2048


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


#: A prompt: 1 to MAX_PROMPT_CHARS characters, not only whitespace.
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS),
                   AfterValidator(_not_blank)]


class ImageFormat(StrEnum):
    """Encoding of returned images."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


class GeneratedImage(BaseModel):
    """One image of a response, with the seed that reproduces it."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64, in the response's `output_format`.")
    seed: int = Field(description="Send it back as `seed` (with num_images 1) to get this "
                      "image again.")


class SheafServeAdapters(BaseModel):
    """sheaf-serve's LoRA fields, accepted so that its clients' bodies pass unchanged:
    `adapters: []` and `adapter_weights: null` are its defaults. Sheaf does not serve LoRA
    adapters yet, so naming one is a 422 saying so."""

    adapters: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=16,
        description="sheaf-serve's LoRA adapter names: only [] is accepted (LoRA adapters "
        "are not supported yet).")
    adapter_weights: list[float] | None = Field(
        default=None, max_length=16, description="sheaf-serve's adapter weights: only null.")

    @model_validator(mode="after")
    def _no_adapters(self) -> SheafServeAdapters:
        unsupported = "LoRA adapters are not supported yet; send [] or leave it out"
        field_errors(type(self).__name__, [
            ((field,), unsupported if field == "adapters" else
             "adapter weights need adapters, which are not supported yet; send null",
             value)
            for field, value in (("adapters", self.adapters),
                                 ("adapter_weights", self.adapter_weights))
            if value])
        return self


class ImageLimits(WorkLimits):
    """What one image request may ask for. Its work grows with pixels x denoising steps x
    images (and attention with the square of the pixels), so each is bounded."""

    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=MIN_SIDE * MIN_SIDE,
                            le=MAX_SIDE * MAX_SIDE,
                            description="width x height of one image (default 2048x2048).")
    max_steps: int = Field(default=200, ge=1, le=500,
                           description="Denoising steps run (image-to-image: "
                           "int(num_inference_steps x strength)).")
    max_images: int = Field(default=MAX_IMAGES, ge=1, le=MAX_IMAGES)

    def problems(self, request: Any) -> list[FieldProblem]:
        """`request` has `image_size` (width, height), `steps_run`, `num_images` (or one)
        and `size_field` (the field a size problem names)."""
        found = []
        width, height = request.image_size
        if width * height > self.max_pixels:
            found.append(over_limit(request.size_field, f"{width}x{height} "
                                    f"({width * height} pixels)", f"{self.max_pixels} pixels",
                                    "max_pixels"))
        if request.steps_run > self.max_steps:
            found.append(over_limit("num_inference_steps", f"{request.steps_run} steps run",
                                    self.max_steps, "max_steps"))
        images = getattr(request, "num_images", 1)
        if images > self.max_images:
            found.append(over_limit("num_images", images, self.max_images, "max_images"))
        return found


def pick_seed(seed: int | None) -> int:
    """The seed a request asked for, or a fresh random one (reported in the response)."""
    return random.SystemRandom().randint(0, MAX_SEED) if seed is None else seed


def image_seeds(seed: int, count: int) -> list[int]:
    """Seeds of a request's `count` images: `seed`, `seed + 1`, … (wrapping at 2**32), so
    image i of a request is also what the request with seed `seed + i` gives alone."""
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]


class ImageDecodeError(ValueError):
    """An uploaded image the server cannot use; the message says why."""


def decode_image(text: str, mode: str = "RGB") -> Image:
    """base64 text → a loaded PIL image in `mode` ("RGB", or "L" for masks)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("is not valid base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageDecodeError(f"is {len(data):,} bytes decoded; the limit is "
                               f"{MAX_IMAGE_BYTES:,}")
    pil = _pil()
    try:
        with pil.open(io.BytesIO(data)) as opened:
            width, height = opened.size  # read from the header: no pixels decoded yet
            if width > MAX_SIDE or height > MAX_SIDE:
                raise ImageDecodeError(f"is {width}x{height}; the largest side allowed is "
                                       f"{MAX_SIDE} pixels")
            return opened.convert(mode)
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises many types for bad data
        raise ImageDecodeError(f"could not be decoded as an image ({type(exc).__name__}: "
                               f"{exc}); send PNG, JPEG or WebP as base64") from None


def encode_image(image: Image, fmt: ImageFormat | str) -> str:
    """A PIL image → base64 text in `fmt` (JPEG and WebP at quality 90)."""
    fmt = ImageFormat(fmt)
    buffer = io.BytesIO()
    options: dict[str, Any] = {} if fmt is ImageFormat.PNG else {"quality": 90}
    image.save(buffer, format=fmt.value.upper(), **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pil() -> Any:
    try:
        from PIL import Image as pil
    except ImportError:
        raise ImageDecodeError("cannot be decoded: this server lacks Pillow (pip install "
                               "'sheaf-core[images]')") from None
    return pil
