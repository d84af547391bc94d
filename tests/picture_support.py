"""Comparing generated pictures, for every test folder that gets images back (the image
backends' tests, servers holding several models)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def pixels(image_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(image_b64)))).astype(int)


def png_b64(width: int = 64, height: int = 64, mode: str = "RGB", seed: int = 0) -> str:
    """A noisy test picture (or mask), base64 PNG."""
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_same_image(a: str, b: str) -> None:
    """Equal up to float rounding: a batched matrix product rounds differently from a lone
    one, which can move a rare pixel by one level (of 255) — and JPEG's block quantisation
    can spread such a change over its 8x8 block."""
    diff = np.abs(pixels(a) - pixels(b))
    lossy = Image.open(io.BytesIO(base64.b64decode(a))).format != "PNG"
    if lossy:
        assert diff.mean() < 0.5, diff.mean()
    else:
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
