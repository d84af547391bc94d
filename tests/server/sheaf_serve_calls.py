"""Runs in a separate venv holding the real sheaf-serve 0.13 (never imported by pytest):
drives a live Sheaf server with sheaf-serve's own clients, unchanged, and prints what each
call gave as one JSON object. Usage: python sheaf_serve_calls.py BASE_URL IMAGE_B64_FILE"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sheaf.api.diffusion import DiffusionRequest, DiffusionResponse
from sheaf.api.multimodal_generation import (
    MultimodalGenerationRequest,
    MultimodalGenerationResponse,
)
from sheaf.api.time_series import Frequency, OutputMode, TimeSeriesRequest, TimeSeriesResponse
from sheaf.client import AsyncSheafClient, SheafClient, ValidationError

URL = sys.argv[1]
IMAGE = Path(sys.argv[2]).read_text()
HISTORY = [10.0 + (i % 7) + 0.3 * i for i in range(40)]


def forecast(model_name: str, **kwargs: Any) -> TimeSeriesRequest:
    return TimeSeriesRequest(model_name=model_name, history=HISTORY, horizon=6,
                             frequency=Frequency.HOURLY, **kwargs)


def sync_calls() -> dict[str, Any]:
    found: dict[str, Any] = {}
    with SheafClient(base_url=URL, timeout=60) as client:
        mean = client.predict("chronos", forecast("chronos"))
        assert isinstance(mean, TimeSeriesResponse), type(mean)
        found["mean"] = {"mean": mean.mean, "request_id": str(mean.request_id),
                         "model_name": mean.model_name}
        quantiles = client.predict("chronos", forecast(
            "my-old-deployment-name", output_mode=OutputMode.QUANTILES,
            quantile_levels=[0.1, 0.5, 0.9]))
        assert isinstance(quantiles, TimeSeriesResponse)
        found["quantiles"] = {"keys": sorted(quantiles.quantiles or {}),
                              "model_name": quantiles.model_name}
        image = client.predict("flux", DiffusionRequest(
            model_name="flux", prompt="a red boat", height=64, width=64,
            num_inference_steps=2, seed=3))
        assert isinstance(image, DiffusionResponse), type(image)
        found["flux"] = {"size": [image.width, image.height], "seed": image.seed,
                         "image_b64": image.image_b64}
        edited = client.predict("sdxl", MultimodalGenerationRequest(
            model_name="sdxl", prompt="an oil painting", image_b64=IMAGE, strength=0.5,
            num_inference_steps=4, seed=5))
        assert isinstance(edited, MultimodalGenerationResponse), type(edited)
        found["sdxl"] = {"size": [edited.width, edited.height], "seed": edited.seed}
        found["health"] = client.health("chronos")
        found["ready"] = client.ready("flux")
        try:
            client.predict("flux", DiffusionRequest(model_name="flux", prompt="x", height=64,
                                                    width=64, adapters=["watercolour"]))
        except ValidationError as exc:
            found["adapters"] = {"status": exc.status_code, "detail": exc.detail}
    return found


async def async_calls() -> dict[str, Any]:
    async with AsyncSheafClient(base_url=URL, timeout=60) as client:
        answer = await client.predict("chronos", forecast("chronos"))
        assert isinstance(answer, TimeSeriesResponse)
        flux = [event async for event in client.stream("flux", DiffusionRequest(
            model_name="flux", prompt="a red boat", height=64, width=64,
            num_inference_steps=3, seed=3))]
        series = [event async for event in client.stream("chronos", forecast("chronos"))]
    result = flux[-1]
    return {"async_mean": answer.mean,
            "flux_stream": [{k: e.get(k) for k in ("type", "done", "step", "total_steps")}
                            for e in flux],
            "flux_stream_result": DiffusionResponse.model_validate(
                {k: v for k, v in result.items() if k not in ("type", "done")}).seed,
            "chronos_stream": [{k: e.get(k) for k in ("type", "done")} for e in series],
            "chronos_stream_mean": series[-1]["mean"]}


print(json.dumps({**sync_calls(), **asyncio.run(async_calls())}))
