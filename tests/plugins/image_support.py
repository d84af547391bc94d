"""What the image backends' tests share: comparing images (`picture_support`), reading
server-sent events and serving over real HTTP (`sheaf_server.testing`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from picture_support import assert_same_image, pixels, png_b64

from sheaf_core import ModelSpec
from sheaf_core.testing import BackendConformance
from sheaf_server import testing
from sheaf_server.settings import SheafConfig
from sheaf_server.testing import sse_events

__all__ = ["ImageConformance", "assert_same_image", "pixels", "png_b64", "serving",
           "sse_events"]


@contextmanager
def serving(*specs: ModelSpec, plugins: tuple[object, ...] = ()) -> Iterator[httpx.Client]:
    """The specs on a real uvicorn (tier 1), ready; a client for it."""
    with testing.serving(SheafConfig(models=list(specs)), plugins=plugins,
                         timeout=60) as client:
        yield client


class ImageConformance(BackendConformance):
    """The conformance suite, comparing images as pictures (`assert_same_image`)."""

    def assert_same(self, a: Any, b: Any, where: str = "response") -> None:
        if isinstance(a, dict) and "image_b64" in a:
            a, b = dict(a), dict(b)
            assert_same_image(a.pop("image_b64"), b.pop("image_b64"))
            for x, y in zip(a.pop("additional_images", []), b.pop("additional_images", []),
                            strict=True):
                assert x["seed"] == y["seed"]
                assert_same_image(x["image_b64"], y["image_b64"])
        super().assert_same(a, b, where)
