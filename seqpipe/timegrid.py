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
import re
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
        return _dates(
            [t.replace(tzinfo=None) for t in times if isinstance(t, datetime.datetime)]
        )  # wall-clock times: a daylight-saving day is still a day
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
    gaps = [Gap(int(i), int(whole[i]) - 1 if on_grid[i] else 0) for i in np.flatnonzero(~on_grid | (whole > 1))]
    return TimeGrid(words, gaps)


def _dates(times: list[datetime.datetime]) -> TimeGrid:
    same_clock = len({t.time() for t in times}) == 1
    month_end = all(t.day == calendar.monthrange(t.year, t.month)[1] for t in times)
    one_a_month = len({(t.year, t.month) for t in times}) == len(times)  # e.g. each month's last trading day
    if same_clock and (month_end or one_a_month or len({t.day for t in times}) == 1):
        months = np.diff([t.year * 12 + t.month for t in times]).astype(np.float64)
        months_step = int(_usual(months))
        return _grid(
            months, months_step, {1: "1 month", 3: "1 quarter", 12: "1 year"}.get(months_step, f"{months_step} months")
        )
    seconds = np.diff(
        [t.timestamp() if t.tzinfo else (t - datetime.datetime(1970, 1, 1)).total_seconds() for t in times]
    )
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


def following(times: Sequence[float | datetime.datetime], count: int) -> list[float | datetime.datetime] | None:
    """The ``count`` times after the last of ``times`` (sorted) on their grid: the dates a forecast
    is for. None when there are too few times to find a step (fewer than three)."""
    if len(times) < 3:
        return None
    last = times[-1]
    if not isinstance(last, datetime.datetime):
        step = _usual(np.diff(np.asarray(times, np.float64)))
        return [last + k * step for k in range(1, count + 1)]
    grid = time_grid(times)
    dates = [t for t in times if isinstance(t, datetime.datetime)]  # all of them: numbers and dates never mix
    if grid.step.endswith(("month", "months", "quarter", "year")):
        months = {"1 month": 1, "1 quarter": 3, "1 year": 12}.get(grid.step) or int(grid.step.split()[0])
        month_end = all(t.day == calendar.monthrange(t.year, t.month)[1] for t in dates)
        return [_add_months(last, k * months, month_end) for k in range(1, count + 1)]
    if grid.step == "1 business day":
        days = np.busday_offset(np.datetime64(last.date()), np.arange(1, count + 1), roll="forward")
        return [datetime.datetime.combine(d.astype(datetime.date), last.timetz()) for d in days]
    seconds = _usual(np.diff([(t.replace(tzinfo=None) - datetime.datetime(1970, 1, 1)).total_seconds() for t in dates]))
    return [last + datetime.timedelta(seconds=k * seconds) for k in range(1, count + 1)]


def _add_months(t: datetime.datetime, months: int, month_end: bool) -> datetime.datetime:
    index = t.year * 12 + t.month - 1 + months
    year, month = divmod(index, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return t.replace(year=year, month=month + 1, day=last_day if month_end else min(t.day, last_day))


def shown_like(example: str, value: float | datetime.datetime) -> str:
    """``value`` written the way ``example`` (a time from the same column) is written: a month as
    2012-01 (or 2012/1), a quarter as 2012 Q1 (or 2012q1), a date without a clock as 2012-01-31, a
    date and clock with the example's separator and precision, numbers with the example's decimals
    (more where the step needs them)."""
    example = example.strip()
    if not isinstance(value, datetime.datetime):
        written = re.fullmatch(r"[-+]?\d*\.(\d+)", example)  # a decimal number: its decimals
        decimals = len(written[1]) if written else 0
        shown = f"{value:.{decimals}f}"
        return shown if abs(float(shown) - value) <= 1e-9 * max(1.0, abs(value)) else repr(round(float(value), 9))
    month = re.fullmatch(r"\d{4}([-/])(\d{1,2})", example)
    if month:
        return f"{value.year}{month[1]}{value.month:0{len(month[2])}d}"
    quarter = re.fullmatch(r"\d{4}([ -]?)([Qq])[1-4]", example)
    if quarter:
        return f"{value.year}{quarter[1]}{quarter[2]}{(value.month - 1) // 3 + 1}"
    if len(example) <= 10:  # a date alone
        return (
            value.date().isoformat().replace("-", example[4])
            if len(example) > 4 and example[4] in "-/"
            else value.date().isoformat()
        )
    clock = re.fullmatch(r".{10}([T ])\d{2}:\d{2}", example)  # hours and minutes, no seconds
    return value.isoformat(sep=example[10] if example[10] in "T " else "T", timespec="minutes" if clock else "auto")
