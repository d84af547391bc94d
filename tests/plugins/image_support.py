"""What the image backends' tests share: comparing images (`picture_support`), reading
server-sent events, serving one model over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from picture_support import assert_same_image, pixels, png_b64

from sheaf_core import ModelSpec, SheafConfig
from sheaf_core.testing import BackendConformance
from sheaf_server import ModelServer

__all__ = ["ImageConformance", "assert_same_image", "pixels", "png_b64", "serving",
           "sse_events"]


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a server-sent event stream, as they arrive."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


@contextmanager
def serving(*specs: ModelSpec, plugins: tuple[object, ...] = ()) -> Iterator[httpx.Client]:
    """The specs on a real uvicorn (tier 1), ready; a client for it."""
    with ModelServer(SheafConfig(models=list(specs)), port=0, log_level="warning",
                     plugins=list(plugins)) as running, \
            httpx.Client(base_url=running.url or "", timeout=60) as client:
        for _ in range(600):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"not ready: {client.get('/ready').text}")
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
