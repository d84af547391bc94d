"""What the image backends' warm-up requests are made of: the smallest size the contract
and the model both accept, and a plain picture of it, so a warm-up costs as little as a
real request can."""

from __future__ import annotations

import math

from sheaf_core.contracts.images import MIN_SIDE, SIZE_MULTIPLE, ImageFormat, encode_image


def smallest_side(model_multiple: int) -> int:
    """The smallest image side that is a multiple of the model's and the contract's."""
    step = math.lcm(model_multiple, SIZE_MULTIPLE)
    return -(-MIN_SIDE // step) * step


def plain_image_b64(side: int, mode: str = "RGB", value: int = 128) -> str:
    """A square image of side `side` of one colour (a mask when `mode` is "L"), PNG base64."""
    from PIL import Image

    colour = value if mode == "L" else (value, value, value)
    return encode_image(Image.new(mode, (side, side), colour), ImageFormat.PNG)
