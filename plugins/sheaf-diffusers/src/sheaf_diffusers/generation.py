"""Turning a batch of requests into as few pipeline calls as possible, each image with its
own seed.

A request asks for `num_images` images from seed s: images s, s+1, …. Every image gets its
own CPU `torch.Generator` seeded with its seed, and diffusers draws each image's initial
noise from its own generator — so an image depends on its seed and settings only, not on
what else shares the call. Requests are grouped by what one call must share (size, steps,
guidance: the backend's `batch_keys`); each group's images go out in calls of at most
`max_images_per_call`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sheaf_core.contracts.images import GeneratedImage, encode_image, image_seeds, pick_seed

R = TypeVar("R")


@dataclass(frozen=True)
class ImageJob:
    """One image to generate: which request it belongs to, and its seed."""

    request: int  # index in the batch
    seed: int


def group_by(requests: Sequence[R], key: Callable[[R], Hashable]) -> list[list[int]]:
    """Indices of `requests` grouped by `key`, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(key(request), []).append(i)
    return list(groups.values())


def plan_images(requests: Sequence[Any], indices: Sequence[int],
                per_call: int) -> Iterator[list[ImageJob]]:
    """The images of the requests at `indices` (seeds drawn at random where a request has
    none), in calls of at most `per_call`."""
    jobs = [ImageJob(i, seed) for i in indices
            for seed in image_seeds(pick_seed(requests[i].seed),
                                    getattr(requests[i], "num_images", 1))]
    return (jobs[start:start + per_call] for start in range(0, len(jobs), per_call))


def generate_images(requests: Sequence[Any], keys: Sequence[str], per_call: int,
                    run_call: Callable[[list[ImageJob]], Sequence[Any]],
                    ) -> list[list[GeneratedImage]]:
    """Every request's images, in order, each encoded in its request's `output_format`.
    `run_call(jobs)` makes one pipeline call for `jobs` (all from requests equal on `keys`)
    and returns their PIL images in order."""
    images: list[list[GeneratedImage]] = [[] for _ in requests]
    for group in group_by(requests, lambda r: tuple(getattr(r, k) for k in keys)):
        for jobs in plan_images(requests, group, per_call):
            pictures = run_call(jobs)
            for job, picture in zip(jobs, pictures, strict=True):
                fmt = requests[job.request].output_format
                images[job.request].append(
                    GeneratedImage(image_b64=encode_image(picture, fmt), seed=job.seed))
    return images


def generators(jobs: Sequence[ImageJob]) -> list[Any]:
    """One seeded CPU generator per image (CPU: the same noise whatever the device)."""
    import torch

    return [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
