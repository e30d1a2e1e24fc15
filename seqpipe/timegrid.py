"""The regular step of a time column, and the gaps where rows are missing.

A forecaster reads rows as equally spaced steps: a series with a missing month would be learnt as
if the month after followed at once. So the step is found from the times themselves (a number
step; calendar months, quarters or years when every date falls on the same day of its month, on
its last day, or no month holds two dates; business days when no date falls on a weekend; else a fixed duration), as the
most common difference between consecutive times, and every other difference (several steps, or
not a whole number of them) is a gap, to be refused or counted.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gap:
    after: int  # index (in time order) of the last row before the gap
    missing: int  # steps missing (at least 1); 0 where the difference is not a whole number of steps


# steps in the season a step of this size usually has (a year of months or quarters, a week of
# days or business days, a day of hours): the seasonal-naive baseline's lag
SEASONS = {"1 month": 12, "1 quarter": 4, "1 day": 7, "1 business day": 5, "1 hour": 24}


@dataclass(frozen=True)
class TimeGrid:
    step: str  # in words: "1", "1 month", "1 business day", "6 hours"
    gaps: list[Gap]

    @property
    def season(self) -> int | None:
        """Steps in the calendar's season for this step (12 for months), None for other steps."""
        return SEASONS.get(self.step)

    @property
    def missing(self) -> int:
        """Rows missing in all (an off-grid difference counts as one)."""
        return sum(max(gap.missing, 1) for gap in self.gaps)


def time_grid(times: Sequence[float | datetime.datetime]) -> TimeGrid:
    """The step of ``times`` (sorted, distinct, all numbers or all dates) and its gaps."""
    if len(times) < 3:
        return TimeGrid("", [])
    if isinstance(times[0], datetime.datetime):
        return _dates([t.replace(tzinfo=None) for t in times])  # wall-clock times: a daylight-saving day is still a day
    diffs = np.diff(np.asarray(times, np.float64))
    step = _usual(diffs)
    # numbers are often rounded (decimal years: 1749.042, 1749.125): 2% off a step is still on it
    return _grid(diffs, step, f"{step:g}", tolerance=0.02)


def _usual(diffs: np.ndarray) -> float:
    """The most common difference (the smaller on a tie): the series' step, which one time off the
    grid or a few missing rows do not move."""
    values, counts = np.unique(np.round(diffs, 9), return_counts=True)
    return float(values[np.argmax(counts)])


def _grid(diffs: np.ndarray, step: float, words: str, tolerance: float = 1e-6) -> TimeGrid:
    ratio = diffs / step
    whole = np.round(ratio)
    on_grid = np.abs(ratio - whole) <= tolerance * np.maximum(whole, 1)
    gaps = [Gap(i, int(whole[i]) - 1 if on_grid[i] else 0) for i in np.flatnonzero(~on_grid | (whole > 1))]
    return TimeGrid(words, gaps)


def _dates(times: list[datetime.datetime]) -> TimeGrid:
    same_clock = len({t.time() for t in times}) == 1
    month_end = all(t.day == calendar.monthrange(t.year, t.month)[1] for t in times)
    one_a_month = len({(t.year, t.month) for t in times}) == len(times)  # e.g. each month's last trading day
    if same_clock and (month_end or one_a_month or len({t.day for t in times}) == 1):
        months = np.diff([t.year * 12 + t.month for t in times]).astype(np.float64)
        step = int(_usual(months))
        return _grid(months, step, {1: "1 month", 3: "1 quarter", 12: "1 year"}.get(step, f"{step} months"))
    seconds = np.diff([t.timestamp() if t.tzinfo else (t - datetime.datetime(1970, 1, 1)).total_seconds() for t in times])
    step = _usual(seconds)
    if same_clock and step == 86400 and all(t.weekday() < 5 for t in times):  # weekdays only: weekends are no gap
        days = np.array([t.date() for t in times], dtype="datetime64[D]")
        return _grid(np.busday_count(days[:-1], days[1:]).astype(np.float64), 1, "1 business day")
    return _grid(seconds, step, _duration(step))


def _duration(seconds: float) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} seconds"
