"""Image generation throughput: sheaf serving FLUX and SDXL vs the raw diffusers loop, in
one run.

For each tiny pipeline (random weights, built here, loaded through `from_pretrained`) —
FLUX text-to-image 128x128 in 4 steps, SDXL img2img 128x128 at 8 steps x strength 0.5 —:

  raw, one per call     this process: the diffusers pipeline called once per image, each
                        with its own seeded generator (what a hand-written server does);
  raw, 4 / 8 per call   this process: the pipeline called on 4 or 8 prompts at once (the
                        hardware's figure for such batches; no HTTP, no JSON, no PNG);
  sheaf, batching off   `sheaf-server serve`, 8 concurrent clients, each request alone;
  sheaf, batching on    the same with max_batch_size 8, max_wait_ms 20.

Sheaf rows include HTTP, JSON, base64 and PNG encoding of every image; raw rows include
none of it (they stop at the PIL image). The client is this process: 8 threads posting back
to back with distinct seeds.

    ./dev bench-images              # the committed run: writes bench/results/image_throughput.*
    ./dev bench-images --images 16 --no-save
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serve_overhead import _free_port, _percentile, publish, serve_config

CLIENTS = 8
BATCH = 8
SIZE = 128


@dataclass
class Row:
    model: str
    mode: str
    images: int
    seconds: float
    images_per_s: float
    batch: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0


@dataclass
class Workload:
    name: str
    backend: str
    build: Callable[[Path], Path]
    body: Callable[[int], dict[str, Any]]
    raw_call: Callable[[Any, list[int]], None]  # (pipeline, seeds) -> generate len(seeds)
    pipeline: str


def _flux_body(seed: int) -> dict[str, Any]:
    return {"prompt": f"a lighthouse at dusk, study {seed}", "height": SIZE, "width": SIZE,
            "num_inference_steps": 4, "seed": seed}


def _sdxl_image() -> str:
    """A noisy SIZE x SIZE picture, base64 PNG."""
    import numpy as np
    from PIL import Image

    from sheaf_core.contracts.images import encode_image

    noise = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return encode_image(Image.fromarray(noise, "RGB"), "png")


def _generators(seeds: list[int]) -> list[Any]:
    import torch

    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def workloads() -> list[Workload]:
    from sheaf_backend_flux.testing import save_tiny_flux
    from sheaf_backend_sdxl.testing import save_tiny_sdxl

    picture = _sdxl_image()

    def flux_raw(pipe: Any, seeds: list[int]) -> None:
        pipe(prompt=[_flux_body(s)["prompt"] for s in seeds], height=SIZE, width=SIZE,
             num_inference_steps=4, guidance_scale=0.0, generator=_generators(seeds),
             output_type="pil")

    def sdxl_raw(pipe: Any, seeds: list[int]) -> None:
        from sheaf_core.contracts.images import decode_image

        image = decode_image(picture)
        pipe(prompt=[f"a watercolour, study {s}" for s in seeds], image=[image] * len(seeds),
             strength=0.5, num_inference_steps=8, guidance_scale=7.5,
             generator=_generators(seeds), output_type="pil")

    return [
        Workload("flux", "flux", save_tiny_flux, _flux_body, flux_raw, "FluxPipeline"),
        Workload("sdxl", "sdxl", save_tiny_sdxl,
                 lambda seed: {"prompt": f"a watercolour, study {seed}", "image_b64": picture,
                               "strength": 0.5, "num_inference_steps": 8, "seed": seed},
                 sdxl_raw, "StableDiffusionXLImg2ImgPipeline"),
    ]


def raw(workload: Workload, model_dir: Path, images: int, per_call: int) -> Row:
    import diffusers

    pipe = getattr(diffusers, workload.pipeline).from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    workload.raw_call(pipe, [0] * per_call)  # warm up
    started = time.perf_counter()
    for start in range(0, images, per_call):
        workload.raw_call(pipe, list(range(start, min(images, start + per_call))))
    seconds = time.perf_counter() - started
    mode = "raw diffusers, one per call" if per_call == 1 else f"raw diffusers, {per_call} per call"
    return Row(workload.name, mode, images, seconds, images / seconds, float(per_call))


@contextmanager
def sheaf_server(workload: Workload, model_dir: Path, batching: bool,
                 workdir: Path) -> Iterator[str]:
    config = {"server": {"host": "127.0.0.1", "port": _free_port()}, "models": [{
        "name": workload.name, "backend": workload.backend,
        "backend_kwargs": {"model_id": str(model_dir), "device": "cpu"},
        "batching": {"enabled": batching, "max_batch_size": BATCH, "max_wait_ms": 20}}]}
    path = workdir / f"{workload.name}-{'on' if batching else 'off'}.yaml"
    with serve_config(config, path) as (base, _pid):
        yield base


def served(workload: Workload, base: str, images: int, batching: bool) -> Row:
    url = f"{base}/{workload.name}/predict"
    with httpx.Client(timeout=300) as warm:
        warm.post(url, json=workload.body(10_000)).raise_for_status()
        before = warm.get(f"{base}/models/{workload.name}").json()["stats"]
    latencies: list[float] = []
    errors = 0

    def client(index: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=300) as http:
            for seed in range(index, images, CLIENTS):
                started = time.perf_counter()
                if http.post(url, json=workload.body(seed)).status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    seconds = time.perf_counter() - started
    after = httpx.get(f"{base}/models/{workload.name}", timeout=30).json()["stats"]
    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    mode = f"sheaf, batching {'on' if batching else 'off'}, {CLIENTS} clients"
    return Row(workload.name, mode, images, seconds, images / seconds,
               round(requests / batches, 1) if batches else None,
               1000 * _percentile(latencies, 50), 1000 * _percentile(latencies, 99), errors)


def table(rows: list[Row]) -> str:
    lines = ["| model | mode | images | seconds | images/s | mean batch | p50 ms | p99 ms | "
             "errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def ms(value: float | None) -> str:
            return "" if value is None else f"{value:.0f}"
        batch = "" if r.batch is None else f"{r.batch:g}"
        lines.append(f"| {r.model} | {r.mode} | {r.images} | {r.seconds:.1f} | "
                     f"{r.images_per_s:.1f} | {batch} | {ms(r.p50_ms)} | {ms(r.p99_ms)} | "
                     f"{r.errors} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images per row")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-images-") as tmp:
        workdir = Path(tmp)
        for workload in workloads():
            model_dir = workload.build(workdir / workload.name)
            print(f"{workload.name}: raw …", file=sys.stderr, flush=True)
            for per_call in (1, BATCH // 2, BATCH):
                rows.append(raw(workload, model_dir, args.images, per_call))
            for batching in (False, True):
                print(f"{workload.name}: sheaf, batching {batching} …", file=sys.stderr,
                      flush=True)
                with sheaf_server(workload, model_dir, batching, workdir) as base:
                    rows.append(served(workload, base, args.images, batching))
    publish("image_throughput", [
        f"Tiny random pipelines built by the bench; {SIZE}x{SIZE}; FLUX 4 steps, SDXL img2img "
        f"8 steps x strength 0.5; {CLIENTS} concurrent clients; batching on = max_batch_size "
        f"{BATCH}, max_wait_ms 20. Sheaf rows include HTTP, JSON, base64 and PNG encoding.", "",
        table(rows)], rows, not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
