"""Frequency strings and forecast timestamps, without pandas.

Accepts sheaf-serve's values (`1min`, `5min`, `15min`, `1h`, `1d`, `1W`, `1M`) and the
common pandas aliases (`15min`, `H`, `D`, `W`, `MS`, `QS`, `YS`, ...). Month-like steps are
calendar steps anchored on the start's day of month (clamped to the month's length).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_FIXED: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "min": timedelta(minutes=1),
    "t": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "b": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_MONTHS: dict[str, int] = {"m": 1, "ms": 1, "me": 1, "q": 3, "qs": 3, "qe": 3, "y": 12,
                           "ys": 12, "ye": 12, "a": 12}
# Season lengths a seasonal model can assume for a unit when nothing better is known.
_SEASON: dict[str, int] = {"s": 60, "sec": 60, "min": 60, "t": 60, "h": 24, "d": 7, "b": 5,
                           "w": 52, "m": 12, "ms": 12, "me": 12, "q": 4, "qs": 4, "qe": 4}

_PATTERN = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)(?:-[A-Za-z]+)?\s*$")

SUPPORTED = "a count and a unit: s, min (or T), h, D, B, W, M (MS/ME), Q (QS/QE), Y (YS/YE)"
#: The longest step a frequency may take: a century (timestamps end in year 9999).
MAX_STEP = timedelta(days=36_525)


@dataclass(frozen=True)
class Frequency:
    """A parsed frequency: either a fixed step or a number of calendar months."""

    text: str
    step: timedelta | None
    months: int
    unit: str
    count: int

    @property
    def season_length(self) -> int:
        """Steps per natural season for this frequency (1 when there is none, e.g. yearly)."""
        per_unit = _SEASON.get(self.unit, 1)
        return max(1, per_unit // self.count) if per_unit % self.count == 0 else 1

    def timestamps(self, start: datetime, offset: int, n: int) -> list[datetime]:
        """The `n` timestamps that follow `offset` steps after `start`. OverflowError
        past year 9999 (`reaches` checks first)."""
        if self.step is not None:
            return [start + self.step * (offset + i) for i in range(n)]
        return [_add_months(start, self.months * (offset + i)) for i in range(n)]


    def reaches(self, start: datetime, steps: int) -> bool:
        """Whether the timestamp `steps` steps after `start` exists (year 9999 at most)."""
        try:
            self.timestamps(start, steps, 1)
        except (OverflowError, ValueError):
            return False
        return True


def parse_frequency(text: str) -> Frequency:
    """Parse a frequency string; raises ValueError saying what is accepted."""
    match = _PATTERN.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit not in _FIXED and unit not in _MONTHS):
        raise ValueError(f"unknown frequency {text!r}; use {SUPPORTED}, e.g. '15min', '1h', '1d'")
    count = int(match.group(1) or 1)
    if count < 1:
        raise ValueError(f"frequency {text!r} must step forward by at least 1")
    unit_step = _FIXED.get(unit, timedelta(days=30.4375 * _MONTHS.get(unit, 0)))
    if count > MAX_STEP / unit_step:
        raise ValueError(f"frequency {text!r} steps more than a century at a time")
    if unit in _FIXED:
        return Frequency(text=text, step=_FIXED[unit] * count, months=0, unit=unit, count=count)
    return Frequency(text=text, step=None, months=_MONTHS[unit] * count, unit=unit, count=count)


def _add_months(when: datetime, months: int) -> datetime:
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)
