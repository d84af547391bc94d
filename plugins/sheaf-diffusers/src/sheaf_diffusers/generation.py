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

from sheaf_core.contracts.images import image_seeds, pick_seed

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
                per_call: int) -> tuple[dict[int, int], Iterator[list[ImageJob]]]:
    """The first seed of each request in `indices` (drawn at random where the request has
    none), and the group's images in calls of at most `per_call`."""
    seeds = {i: pick_seed(requests[i].seed) for i in indices}
    jobs = [ImageJob(i, seed) for i in indices
            for seed in image_seeds(seeds[i], getattr(requests[i], "num_images", 1))]
    calls = (jobs[start:start + per_call] for start in range(0, len(jobs), per_call))
    return seeds, calls


def generators(jobs: Sequence[ImageJob]) -> list[Any]:
    """One seeded CPU generator per image (CPU: the same noise whatever the device)."""
    import torch

    return [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
