"""The image backends' CUDA paths, checked on a GPU machine in one short run.

Tiny FLUX (schnell-style) and SDXL pipelines with random weights, built here and loaded
through diffusers' `from_pretrained`, served together by one sheaf-server (tier 1, one
process, real uvicorn on 127.0.0.1) on `--device` (default cuda): FLUX text-to-image, four
concurrent requests batched together and the same seed answered with the same image;
SDXL img2img and inpainting; each model's weights on the device in its dtype (bf16 on
CUDA). Prints one JSON object (and writes it to `--out` if given); exits 1 if a check
fails. Not part of the test suite: CI has no GPU.

    python bench/image_cuda_check.py --out results.json        # on the GPU machine
    python bench/image_cuda_check.py --device cpu              # the same checks on CPU
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

SMALL = {"height": 64, "width": 64, "num_inference_steps": 2}


def png_b64(mode: str = "RGB", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    shape = (64, 64, 3) if mode == "RGB" else (64, 64)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(image_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(image_b64))))


def weights_of(server: Any, name: str) -> dict[str, str]:
    """Where the served model's weights live, read from the pipeline in this process."""
    backend = server._host.engine.runtimes[name].backend
    parameter = next(backend.pipe.transformer.parameters()) if name == "flux" \
        else next(backend.img2img.unet.parameters())
    return {"device": str(parameter.device), "dtype": str(parameter.dtype)}


def check(device: str) -> dict[str, Any]:
    import torch

    from sheaf_backend_flux.testing import save_tiny_flux
    from sheaf_backend_sdxl.testing import save_tiny_sdxl
    from sheaf_core import ModelSpec
    from sheaf_server import ModelServer
    from sheaf_server.settings import ServerSettings, SheafConfig

    report: dict[str, Any] = {"device": device, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0)
                              if torch.cuda.is_available() else None, "checks": {}}
    checks = report["checks"]
    with tempfile.TemporaryDirectory(prefix="sheaf-cuda-") as tmp:
        flux_dir = save_tiny_flux(Path(tmp) / "flux")
        sdxl_dir = save_tiny_sdxl(Path(tmp) / "sdxl")
        batching = {"max_batch_size": 4, "max_wait_ms": 200}
        config = SheafConfig(server=ServerSettings(workers=1), models=[
            ModelSpec(name="flux", backend="flux", batching=batching,
                      backend_kwargs={"model_id": str(flux_dir), "device": device}),
            ModelSpec(name="sdxl", backend="sdxl", batching=batching,
                      backend_kwargs={"model_id": str(sdxl_dir), "device": device})])
        started = time.perf_counter()
        with ModelServer(config, port=0, log_level="warning") as server, \
                httpx.Client(base_url=server.url, timeout=300) as client:
            while client.get("/ready").status_code != 200:
                time.sleep(0.2)
            report["ready_s"] = round(time.perf_counter() - started, 2)
            for name in ("flux", "sdxl"):
                checks[f"{name}_weights"] = weights_of(server, name)

            def flux(seed: int) -> httpx.Response:
                return client.post("/flux/predict", json={"prompt": "a boat", "seed": seed,
                                                         **SMALL})

            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(flux, [1, 2, 3, 1]))
            checks["flux_batch_of_4_s"] = round(time.perf_counter() - started, 2)
            checks["flux_status"] = [a.status_code for a in answers]
            images = [pixels(a.json()["image_b64"]) for a in answers if a.status_code == 200]
            checks["flux_shapes_ok"] = all(i.shape == (64, 64, 3) for i in images)
            checks["flux_same_seed_same_image"] = len(images) == 4 and bool(
                np.array_equal(images[0], images[3]))
            checks["flux_other_seed_other_image"] = len(images) == 4 and not bool(
                np.array_equal(images[0], images[1]))
            served = client.get("/models/flux").json()
            checks["flux_batches"] = served.get("stats")
            for mask, mode in ((None, "img2img"), (png_b64("L", 2), "inpaint")):
                started = time.perf_counter()
                answer = client.post("/sdxl/predict", json={
                    "prompt": "a watercolour", "image_b64": png_b64(seed=1), "mask_b64": mask,
                    "num_inference_steps": 4, "strength": 0.5, "seed": 5})
                checks[f"sdxl_{mode}_s"] = round(time.perf_counter() - started, 2)
                checks[f"sdxl_{mode}_status"] = answer.status_code
                body = answer.json()
                checks[f"sdxl_{mode}_ok"] = answer.status_code == 200 and body["mode"] == mode \
                    and pixels(body["image_b64"]).shape == (64, 64, 3)
            if torch.cuda.is_available():
                report["gpu_peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    wanted = "cuda" if device.startswith("cuda") else "cpu"
    report["ok"] = (all(s == 200 for s in checks["flux_status"])
                    and checks["flux_shapes_ok"] and checks["flux_same_seed_same_image"]
                    and checks["flux_other_seed_other_image"]
                    and checks["sdxl_img2img_ok"] and checks["sdxl_inpaint_ok"]
                    and all(checks[f"{n}_weights"]["device"].startswith(wanted)
                            for n in ("flux", "sdxl")))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = check(args.device)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
