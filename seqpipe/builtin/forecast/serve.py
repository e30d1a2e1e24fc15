"""Serving a forecaster from its ONNX files alone (no torch): the predictor ``seqpipe predict`` uses
for ``forecast`` models, and :func:`read_history` and :func:`forecast` for programs that call them
directly. A serving plugin (group ``seqpipe.serving``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqpipe import hookimpl
from seqpipe.data import FLOAT32_MAX, Record, time_value
from seqpipe.errors import SeqpipeError
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.runtime import StepRunner, open_export
from seqpipe.timegrid import following, shown_like, time_grid


@dataclass(frozen=True)
class History:
    """A series file as the forecaster reads it: values [rows, columns] in time order, and (when the
    file has the model's time column) each row's time and how the last one was written."""

    values: np.ndarray
    times: list[Any] | None = None
    last_time: str | None = None


def read_history(
    path: str | Path, columns: list[str], time_column: str | None = None, time_gaps: str = "refuse"
) -> History:
    """Rows of numbers from a CSV file, [rows, len(columns)]: the named columns when the file has a
    header (rows ordered by ``time_column`` when the file has it, as in training, and times that skip
    steps refused unless training accepted them: ``time_gaps``); a one-column
    model also reads the only (or the last) column of a file without them, or a headerless file of
    numbers. Every value must be a finite number."""
    file = Path(path)
    try:
        rows = [row for row in csv.reader(file.read_text(encoding="utf-8").splitlines()) if row]
    except FileNotFoundError:
        raise SeqpipeError(f"{file}: no such series file; give a CSV file of values, oldest first.") from None
    except UnicodeDecodeError:
        raise SeqpipeError(f"{file}: not UTF-8 text; save the series as a UTF-8 CSV file.") from None
    if not rows:
        raise SeqpipeError(f"{file}: is empty; give a CSV file of values, oldest first.")
    header, body = rows[0], rows
    if not _is_number(header[0] if len(header) == 1 else header[-1]):
        body = rows[1:]
        missing = [c for c in columns if c not in header]
        if not missing:
            indices = [header.index(c) for c in columns]
        elif len(columns) == 1 and len(header) == 1:
            indices = [0]
        else:
            raise SeqpipeError(
                f"{file}: no column {', '.join(map(repr, missing))} (found: {', '.join(header)}); the model "
                f"reads {', '.join(columns)} at every step."
            )
    elif len(columns) == 1:
        indices = [len(header) - 1]
    else:
        raise SeqpipeError(
            f"{file}: has no header; the model reads {', '.join(columns)}: give a CSV with those columns."
        )
    values, times, lines, written = [], [], [], []
    for number, row in enumerate(body, start=len(rows) - len(body) + 1):
        try:
            values.append([float(row[i]) for i in indices])
        except (ValueError, IndexError):
            raise SeqpipeError(
                f"{file}:{number}: holds something that is not a number in {', '.join(columns)}; fix the series file."
            ) from None
        if not all(abs(v) <= FLOAT32_MAX for v in values[-1]):
            raise SeqpipeError(
                f"{file}:{number}: a missing or infinite value (nan, inf) in {', '.join(columns)}; the model needs "
                "every past value: fill it in."
            )
        if time_column is not None and body is not rows and time_column in header:
            record = Record(zip(header, row))
            record.line = number
            times.append(time_value(record, time_column, file))
            lines.append(number)
            written.append(record[time_column])
    if times:  # as training did: rows in time order, whatever the file's
        order = sorted(range(len(values)), key=times.__getitem__)
        values = [values[i] for i in order]
        grid = time_grid([times[i] for i in order])
        if grid.gaps and time_gaps != "accept":
            gap = grid.gaps[0]
            raise SeqpipeError(
                f"{file}:{lines[order[gap.after + 1]]}: {grid.missing} missing step(s) in column '{time_column}' "
                f"(the series steps by {grid.step}), the first after line {lines[order[gap.after]]}; the model "
                "reads rows as equally spaced steps: add rows for the missing times."
            )
        return History(
            np.array(values, dtype=np.float32).reshape(len(values), len(columns)),
            [times[i] for i in order],
            written[order[-1]],
        )
    return History(np.array(values, dtype=np.float32).reshape(len(values), len(columns)))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def forecast(runner: StepRunner, history: np.ndarray, steps: int) -> np.ndarray:
    """The next ``steps`` rows after ``history`` [rows, columns] (original units) [steps, columns]:
    the step graph reads the last ``window`` rows, then each forecast is fed back in as the next input."""
    encoding = runner.spec["encoding"]
    scaling, window = encoding["input"]["scaling"], int(encoding["input"]["window"])
    mean, std = np.asarray(scaling["mean"], np.float64), np.asarray(scaling["std"], np.float64)
    context = ((history[-window:] - mean) / std).astype(np.float32)
    _, last, state = runner.run_padded(context[None], np.array([len(context)]))  # last: [1, F]
    out = [last]
    for _ in range(steps - 1):
        last, state = runner.step(last, state)
        out.append(last)
    return np.concatenate(out, axis=0) * std + mean


class ForecastPredictor(Predictor):
    takes_inputs = False  # one series file, one forecast
    options = (Option("steps", int, 5, "values to forecast ahead"),)
    usage = (
        "series.csv --steps 5   (a CSV of past rows with the model's columns: oldest first, or with its time column)"
    )

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        steps = options.task["steps"]
        runner = open_export(path, device=options.device, precision=options.precision, prefer="step")
        if not isinstance(runner, StepRunner):
            raise SeqpipeError(
                f"{runner.path}: forecasting feeds each forecast back through the step graph; pass the run directory "
                "or step.onnx."
            )
        if len(inputs) != 1:
            raise SeqpipeError(
                "give one CSV file holding the series (values oldest first), e.g. seqpipe predict RUN series.csv "
                "--steps 5."
            )
        if steps < 1:
            raise SeqpipeError(f"--steps {steps}: forecast at least one step ahead.")
        encoding = runner.spec["encoding"]["input"]
        columns, targets = encoding["columns"], encoding["targets"]
        history = read_history(inputs[0], columns, encoding.get("time_column"), encoding.get("time_gaps", "refuse"))
        window = int(encoding["window"])
        if len(history.values) < 1:
            raise SeqpipeError(f"{inputs[0]}: holds no values; the model reads up to {window} past rows.")
        values = forecast(runner, history.values, steps)  # [steps, columns]
        result: dict[str, Any] = {"input": inputs[0], "history_used": int(min(len(history.values), window))}
        ahead = following(history.times, steps) if history.times else None
        if ahead is not None:  # the run had a time column: each forecast's time, written as the file writes its times
            result["times"] = [shown_like(history.last_time or "", t) for t in ahead]
        said = [f"{t} " for t in result["times"]] if "times" in result else [""] * steps
        if len(columns) == 1:
            result["forecast"] = [float(v) for v in values[:, 0]]
            result["line"] = f"next {steps}: " + ", ".join(f"{when}{v:.4g}" for when, v in zip(said, values[:, 0]))
        else:
            result["forecast"] = {c: [float(v) for v in values[:, i]] for i, c in enumerate(columns)}
            result["line"] = "; ".join(
                f"{c} next {steps}: "
                + ", ".join(f"{when}{v:.4g}" for when, v in zip(said, values[:, columns.index(c)]))
                for c in targets
            )
        if len(history.values) < window:  # said, not silent: the model learned from windows of `window` rows
            result["short_history"] = {"rows": len(history.values), "window": window}
            result["line"] += (
                f"  (from {len(history.values)} past rows; the model was trained on {window}: give {window} or more "
                "for the forecasts it was tested on)"
            )
        return [result]


@hookimpl
def register_predictors(register):
    register("forecast", ForecastPredictor)
