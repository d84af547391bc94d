"""Answer arbitrary quantile levels from a model's fixed quantile grid, exactly or linearly
interpolated between the two neighbouring levels — never another level's values."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported by the caller at predict time, not at discovery
    import numpy as np


def covers(grid: Sequence[float], level: float) -> bool:
    return grid[0] <= level <= grid[-1]


def at_level(values: np.ndarray, grid: Sequence[float], level: float) -> np.ndarray:
    """`values[..., q, h]` on `grid` → `[..., h]` at `level` (grid sorted, level covered)."""
    j = bisect_left(grid, level)
    if j < len(grid) and grid[j] == level:
        return values[..., j, :]
    low, high = grid[j - 1], grid[j]
    weight = (level - low) / (high - low)
    return (1.0 - weight) * values[..., j - 1, :] + weight * values[..., j, :]
