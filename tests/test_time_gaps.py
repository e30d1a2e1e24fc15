"""A forecast's time column read as equally spaced steps: the step found from the times (numbers,
days, business days, calendar months), every skipped step refused at `check` with the first gap
named, or read across and counted with ``time_gaps = "accept"``; `predict` holds history to the same."""

from __future__ import annotations

import datetime
import json
import textwrap
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st

from seqpipe.cli import main
from seqpipe.timegrid import following, shown_like, time_grid


def _days(start: datetime.date, count: int, every: int = 1) -> list[datetime.datetime]:
    return [
        datetime.datetime.combine(start + datetime.timedelta(days=every * i), datetime.time()) for i in range(count)
    ]


def test_months_of_unequal_length_are_one_step_and_a_missing_month_is_a_gap():
    monthly = [datetime.datetime(2000 + m // 12, m % 12 + 1, 1) for m in range(30)]
    assert time_grid(monthly).step == "1 month" and not time_grid(monthly).gaps
    month_ends = [datetime.datetime(2001, m, 1) - datetime.timedelta(days=1) for m in range(2, 13)]
    assert time_grid(month_ends).step == "1 month" and not time_grid(month_ends).gaps
    without_march = monthly[:14] + monthly[15:]
    grid = time_grid(without_march)
    assert [(g.after, g.missing) for g in grid.gaps] == [(13, 1)] and grid.missing == 1
    quarters = [datetime.datetime(2000 + q // 4, 3 * (q % 4) + 1, 1) for q in range(12)]
    assert time_grid(quarters).step == "1 quarter" and not time_grid(quarters).gaps


def test_weekday_series_have_no_weekend_gaps_but_a_missing_weekday_is_one():
    weekdays = [d for d in _days(datetime.date(2024, 1, 1), 40) if d.weekday() < 5]
    assert time_grid(weekdays).step == "1 business day" and not time_grid(weekdays).gaps
    grid = time_grid(weekdays[:10] + weekdays[12:])
    assert grid.missing == 2 and grid.gaps[0].after == 9


def test_hours_and_off_grid_times():
    hourly = [datetime.datetime(2024, 3, 1) + datetime.timedelta(hours=6 * i) for i in range(20)]
    assert time_grid(hourly).step == "6 hours" and not time_grid(hourly).gaps
    shifted = hourly[:5] + [hourly[5] + datetime.timedelta(hours=1)] + hourly[6:]
    grid = time_grid(shifted)  # off the grid on both sides: neither difference is a whole number of steps
    assert grid.step == "6 hours" and [g.after for g in grid.gaps] == [4, 5] and grid.missing == 2


@given(
    step=st.sampled_from([1.0, 0.25, 7.0, 0.1]),
    start=st.floats(-1e3, 1e3),
    n=st.integers(3, 60),
    holes=st.sets(st.integers(1, 58), max_size=5),
)
def test_numeric_times_count_exactly_the_rows_removed(step, start, n, holes):
    """Removing rows from an evenly spaced series (never the first or last, and fewer than half the
    differences left span a hole, so the step is still the usual one) leaves that many missing steps."""
    holes = {h for h in holes if h < n - 1}
    kept_rows = [i for i in range(n) if i not in holes]
    assume(2 * sum(b - a == 1 for a, b in zip(kept_rows, kept_rows[1:])) > len(kept_rows) - 1)
    kept = [start + i * step for i in range(n) if i not in holes]
    grid = time_grid(kept)
    assert grid.step == f"{step:g}" and grid.missing == len(holes) and all(g.missing >= 1 for g in grid.gaps)


def _monthly(path: Path, drop: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = [f"{2000 + m // 12}-{m % 12 + 1:02d}-01,{10 + np.sin(m / 2) + 0.1 * rng.normal():.4f}" for m in range(120)]
    if drop is not None:
        del rows[drop]
    path.write_text("month,value\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _pipeline(path: Path, data: Path, gaps: str | None = None) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [data]
        path = "{data.name}"
        [model]
        hidden_size = 8
        [task]
        name = "forecast"
        [task.options]
        time_column = "month"
        window = 6
        strong_baseline = false
        {f'time_gaps = "{gaps}"' if gaps else ""}
        [training]
        epochs = 1
        batch_size = 32
        patience = 4
    """),
        encoding="utf-8",
    )
    return path


def test_a_missing_month_is_refused_at_check_naming_the_rows_around_it(tmp_path):
    data = _monthly(tmp_path / "m.csv", drop=40)  # 2003-05 removed
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path / "p.toml", data))])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert (
        f"{data}:42: 1 missing step(s) in 1 gap(s) in column 'month' (the series steps by 1 month): the first from "
        "'2003-04-01' (line 41) to '2003-06-01'"
    ) in result.output and 'time_gaps = "accept"' in result.output
    clean = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path / "p.toml", _monthly(tmp_path / "m.csv")))])
    assert clean.exit_code == 0, clean.output


def test_accepted_gaps_are_counted_in_the_run_and_predict_refuses_a_gap_in_history(tmp_path):
    data = _monthly(tmp_path / "m.csv", drop=40)
    result = CliRunner().invoke(
        main, ["run", str(_pipeline(tmp_path / "p.toml", data, "accept")), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert "1 missing time steps in column 'month'" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["left_out"]["time_gaps"] == 1
    values = np.array([float(line.split(",")[1]) for line in data.read_text().splitlines()[1:]])
    test = np.arange(len(values) - metrics["data"]["examples"]["test"], len(values))  # the latest rows
    expected = float(np.sqrt(np.mean((values[test - 12] - values[test]) ** 2)))  # monthly: a year before
    assert (
        abs(metrics["test"]["seasonal_naive_rmse"] - expected) < 1e-4
        and "seasonal_naive_rmse_5_step" in metrics["test"]
    )
    history = tmp_path / "history.csv"
    history.write_text(
        "month,value\n2010-01-01,1.0\n2010-02-01,1.1\n2010-04-01,1.2\n2010-05-01,1.0\n", encoding="utf-8"
    )
    served = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(history)])
    assert served.exit_code == 0, served.output  # training accepted gaps, so serving does too
    refusing = tmp_path / "strict"
    strict = CliRunner().invoke(
        main, ["run", str(_pipeline(tmp_path / "q.toml", _monthly(tmp_path / "full.csv"))), "--out", str(refusing)]
    )
    assert strict.exit_code == 0, strict.output
    served = CliRunner().invoke(main, ["predict", str(refusing), str(history)])
    assert (
        served.exit_code == 2
        and f"{history}:4: 1 missing step(s) in column 'month' (the series steps by 1 month)" in served.output
    )
    regular = tmp_path / "regular.csv"
    regular.write_text(
        "month,value\n2010-03-01,1.1\n2010-01-01,1.0\n2010-02-01,1.2\n2010-04-01,1.0\n", encoding="utf-8"
    )
    served = CliRunner().invoke(main, ["predict", str(refusing), str(regular), "--steps", "3", "--json"])
    assert served.exit_code == 0, served.output
    result = json.loads(served.stdout)
    assert (
        result["times"] == ["2010-05-01", "2010-06-01", "2010-07-01"] and len(result["forecast"]) == 3
    )  # the dates forecast for
    said = CliRunner().invoke(main, ["predict", str(refusing), str(regular), "--steps", "2"]).stdout
    assert said.startswith("next 2: 2010-05-01 ") and ", 2010-06-01 " in said
    as_file = CliRunner().invoke(main, ["predict", str(refusing), "--file", str(regular)])
    assert (
        as_file.exit_code == 2
        and "task 'forecast' does not read a list of inputs, so --file does not apply" in as_file.output
    )


def test_months_and_quarters_written_without_a_day_are_read_as_their_first_day(tmp_path):
    """`1949-01` (ISO 8601's month) and `1970 Q1` (a quarter) order the rows, and a missing one is a gap."""
    from seqpipe.data import Record, time_value

    def read(text: str):
        record = Record({"t": text})
        record.line = 2
        return time_value(record, "t", tmp_path / "s.csv")

    assert read("1949-01") == datetime.datetime(1949, 1, 1) and read("2012/11") == datetime.datetime(2012, 11, 1)
    assert read("1970 Q1") == datetime.datetime(1970, 1, 1) and read("1970-q4") == datetime.datetime(1970, 10, 1)
    quarters = [read(f"{1970 + i // 4} Q{i % 4 + 1}") for i in range(12) if i != 5]
    grid = time_grid(quarters)
    assert grid.step == "1 quarter" and grid.missing == 1 and grid.season == 4


def test_regular_series_that_are_easy_to_mistake_for_gappy_ones():
    """Each month's last trading day, daily times across a daylight-saving change, and monthly
    decimal years rounded to three places are all regular."""
    last_trading = []
    for m in range(24):
        day = datetime.date(2020 + (m + 1) // 12, (m + 1) % 12 + 1, 1) - datetime.timedelta(days=1)
        while day.weekday() > 4:
            day -= datetime.timedelta(days=1)
        last_trading.append(datetime.datetime.combine(day, datetime.time()))
    assert time_grid(last_trading).step == "1 month" and not time_grid(last_trading).gaps
    berlin = datetime.timezone(datetime.timedelta(hours=1)), datetime.timezone(datetime.timedelta(hours=2))
    daily = [datetime.datetime(2024, 3, 25 + i, tzinfo=berlin[0]) for i in range(7)] + [
        datetime.datetime(2024, 4, 1 + i, tzinfo=berlin[1]) for i in range(6)
    ]  # the clocks moved on 31 March
    assert time_grid(daily).step == "1 day" and not time_grid(daily).gaps
    decimal_years = [round(1749 + (m + 0.5) / 12, 3) for m in range(120)]
    assert not time_grid(decimal_years).gaps


def test_a_flat_series_still_trains(tmp_path):
    """A constant target (nothing to difference or test for a trend) is read as level-stationary."""
    from seqpipe.baselines import differencing_order

    assert differencing_order(np.full(50, 3.0)) == 0 and differencing_order(np.arange(5.0)) == 0
    (tmp_path / "flat.csv").write_text("value\n" + "5.0\n" * 80, encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        '[data]\npath = "flat.csv"\n[task]\nname = "forecast"\n[task.options]\nwindow = 6\n', encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["check", str(tmp_path / "p.toml")])
    assert result.exit_code == 0 and "level-stationary" in result.output, result.output


@given(
    st.sampled_from(["days", "business days", "months", "month ends", "quarters", "years", "hours", "numbers"]),
    st.integers(3, 40),
    st.integers(1, 12),
)
def test_the_times_a_forecast_is_for_continue_the_grid_without_a_gap(kind, count, ahead):
    start = datetime.datetime(2011, 1, 31 if kind == "month ends" else 3, 6 if kind == "hours" else 0)
    if kind in ("days", "hours", "numbers"):
        times = (
            [start + datetime.timedelta(**{"days" if kind == "days" else "hours": i}) for i in range(count)]
            if kind != "numbers"
            else [1700.5 + 0.25 * i for i in range(count)]
        )
    elif kind == "business days":
        times = [
            datetime.datetime.combine(d.astype(datetime.date), datetime.time())
            for d in np.busday_offset(np.datetime64("2011-01-03"), np.arange(count))
        ]
    else:
        months = {"months": 1, "month ends": 1, "quarters": 3, "years": 12}[kind]
        times = [start]
        for _ in range(count - 1):
            times.append(
                following(times, 1)[0] if len(times) >= 3 else _month_after(times[-1], months, kind == "month ends")
            )
    ahead_times = following(times, ahead)
    grid, extended = time_grid(times), time_grid(times + ahead_times)
    assert len(ahead_times) == ahead and ahead_times[0] > times[-1]
    assert extended.gaps == [] and extended.step == grid.step


def _month_after(t: datetime.datetime, months: int, month_end: bool) -> datetime.datetime:
    import calendar

    year, month = divmod(t.year * 12 + t.month - 1 + months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return t.replace(year=year, month=month + 1, day=last if month_end else min(t.day, last))


def test_forecast_times_are_written_as_the_file_writes_its_times():
    assert shown_like("1960-12", datetime.datetime(1961, 1, 1)) == "1961-01"
    assert shown_like("2008 Q4", datetime.datetime(2009, 4, 1)) == "2009 Q2"
    assert shown_like("2012/01/04", datetime.datetime(2012, 1, 5)) == "2012/01/05"
    assert shown_like("2012-01-04T06:00", datetime.datetime(2012, 1, 4, 7)) == "2012-01-04T07:00"
    assert shown_like("2020-01-01 11:00:00", datetime.datetime(2020, 1, 1, 12)) == "2020-01-01 12:00:00"
    assert (
        shown_like("2012q4", datetime.datetime(2013, 1, 1)) == "2013q1"
        and shown_like("2012/9", datetime.datetime(2012, 12, 1)) == "2012/12"
    )
    assert shown_like("1703", 1704.0) == "1704" and shown_like("1749.042", 1749.125) == "1749.125"
    assert (
        shown_like("1.50", 2.25) == "2.25" and shown_like("1700000001.5", 1700000002.0) == "1700000002.0"
    )  # distinct, exact
