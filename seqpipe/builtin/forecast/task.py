"""Forecasting real-valued series: after reading values up to time t, predict the values at t+1.

One or more target columns, and optionally covariate columns (``input_columns``), are read per
row; an optional ``time_column`` orders the rows and labels the plot. Each step's input is the
vector of every column read (targets first), and the model predicts that whole vector's next
value, so a multi-step forecast feeds each prediction back as the next input (autoregressive),
exactly as a served step graph does; metrics are reported on the target columns. The series is
split in time order (train, then validation, then test: no future leaks into training), each
column scaled with statistics of the training part only, and cut into windows of ``window``
rows. The baseline is persistence: tomorrow equals today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqpipe import hookimpl
from seqpipe.baselines import arima_forecasts, differencing_order
from seqpipe.contracts import Task, Topology
from seqpipe.data import number, read_records, time_value
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel
from seqpipe.onnx.native import sequence_graph
from seqpipe.timegrid import time_grid


class ForecastOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value_column: str = Field(
        "value",
        description="column holding the series, one row per time step (the target when target_columns is not given)",
    )
    target_columns: list[str] | None = Field(
        None, min_length=1, description="columns to forecast and score (instead of value_column)"
    )
    input_columns: list[str] = Field(
        default_factory=list,
        description="covariates: more columns read at every step and "
        "forecast alongside the targets (not scored), e.g. other weather measurements",
    )
    time_column: str | None = Field(
        None,
        description="column giving each row's time (a number or an ISO date such as "
        "2012-01-31 or 2012/01/31): rows are ordered by it and the plot's x-axis shows it; "
        "default: rows in file order",
    )
    time_gaps: Literal["refuse", "accept"] = Field(
        "refuse",
        description="a time_column whose times skip steps (a missing month in a monthly series): refuse: an "
        "error naming the first gap; accept: read the rows as consecutive steps anyway, the missing steps counted in "
        "the run log",
    )
    season: int | None = Field(
        None,
        ge=2,
        description="steps in one season (12 for months in a year), for the "
        "seasonal-naive baseline; default: from time_column's step (months 12, quarters 4, days 7, "
        "business days 5, hours 24), else none",
    )
    window: int = Field(24, ge=2, description="past values the model reads before each forecast")
    horizon: int = Field(5, ge=1, description="steps ahead for the multi-step (autoregressive) evaluation")
    scaling: Literal["standard", "none"] = Field(
        "standard", description="standardise with the training part's mean and std"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the head's input (training only)")
    residual: bool | Literal["auto"] = Field(
        "auto",
        description="true: the model predicts the change from the row it has just read (the head's output is "
        "added to it, inside the exported graphs): it starts as persistence and follows a trend past the training "
        "part's "
        "range; false: it predicts the next row itself, its reach bounded by what the head makes of the recurrent "
        "state; "
        "auto: true when a KPSS test finds a target's training part not level-stationary (a trend, a random walk), as "
        "auto-ARIMA chooses to difference",
    )
    strong_baseline: bool = Field(
        True,
        description="also report an ARIMA model's RMSE on the test part (statsmodels, order by "
        "AIC on the training part); false: skip it",
    )


@dataclass
class Batch:
    x: torch.Tensor  # [B, T, F] scaled values of every column read
    lengths: torch.Tensor  # [B]
    targets: torch.Tensor  # [B, T, F] the next values after each step


class ForecastTask(Task):
    default_input = None  # reads its own columns (see its options): no [input] table
    Options = ForecastOptions
    monitor = "rmse"
    monitor_mode = "min"
    trivial_baselines = ("persistence", "seasonal_naive")
    predict_example = "series.csv --steps 5   (a CSV of past values, oldest first)"
    example_pipeline = {"data": {"dataset": "sunspots"}, "task": {"options": {"value_column": "SUNACTIVITY"}}}

    def __init__(self, options: ForecastOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.series = np.zeros((0, 1), np.float32)  # raw values [N, F]: targets, then covariates
        self.scaled = np.zeros((0, 1), np.float32)
        self.mean, self.std = np.zeros(1), np.ones(1)  # per column, from the training part
        self.times: list[Any] = []  # each row's time_column value (or its row number)
        self.season: int | None = options.season  # the seasonal-naive baseline's lag; None: no such baseline
        self.residual = options.residual is True  # decided from the training part when "auto"
        self.trending: list[str] = []  # target columns whose training part a KPSS test finds not level-stationary
        self.targets: dict[str, np.ndarray] = {}  # split -> indices of the values it forecasts
        self.examples: dict[str, np.ndarray] = {}  # train: window end indices (len(...) counts examples)

    # -- data ---------------------------------------------------------------------------------
    @property
    def target_columns(self) -> list[str]:
        return list(self.options.target_columns or [self.options.value_column])

    @property
    def columns(self) -> list[str]:
        """Every column read at each step: the targets, then the covariates."""
        return self.target_columns + [c for c in self.options.input_columns if c not in self.target_columns]

    def prepare(self) -> dict[str, int]:
        o, d = self.options, self.data.config
        if self.data.validation_path or self.data.test_path:
            raise DataError(
                f"{self.data.where}: the forecast task splits one series by time (the last values are the test part); "
                "give the whole series as data.path and set data.validation_fraction and data.test_fraction."
            )
        columns = self.columns
        rows = read_records(
            self.data.path,
            self.data.format,
            columns + ([o.time_column] if o.time_column else []),
            self.data.where,
            account=self.data.account,
        )
        self.times = list(range(len(rows)))  # row numbers, unless a time column orders the rows
        if o.time_column:
            rows = self._ordered(rows)
        self.series = np.array(
            [[number(r, c, self.data.path, "forecasting needs numbers") for c in columns] for r in rows],
            dtype=np.float32,
        )
        n = len(self.series)
        n_test, n_val = round(n * d.test_fraction), round(n * d.validation_fraction)
        train_end = n - n_test - n_val
        if train_end <= o.window + 1 or n_val < 1 or n_test < 1:
            raise DataError(
                f"{self.data.path}: {n} values are too few for window {o.window} with these split fractions; "
                "lower task.options.window or add data."
            )
        train = self.series[:train_end].astype(np.float64)
        if o.residual == "auto":
            self.trending = [c for i, c in enumerate(self.target_columns) if differencing_order(train[:, i])]
            self.residual = bool(self.trending)
        if o.scaling == "standard":  # fitted on the training part only
            std = train.std(axis=0)
            self.mean, self.std = train.mean(axis=0), np.where(std > 0, std, 1.0)
        else:
            self.mean, self.std = np.zeros(len(columns)), np.ones(len(columns))
        self.scaled = ((self.series - self.mean) / self.std).astype(np.float32)
        self.targets = {
            "train": np.arange(o.window, train_end),
            "validation": np.arange(train_end, train_end + n_val),
            "test": np.arange(train_end + n_val, n),
        }
        self.examples = {"train": self.targets["train"]}
        return {split: len(idx) for split, idx in self.targets.items()}

    def notes(self) -> list[str]:
        if self.options.residual != "auto":
            return []
        if self.trending:
            return [
                f"forecast: the training part of {', '.join(map(repr, self.trending))} is not level-stationary (KPSS "
                "test, "
                '5%): the model predicts the change from each row read (task.options.residual = "auto"; set true or '
                "false to choose)"
            ]
        return [
            "forecast: the training part is level-stationary (KPSS test, 5%): the model predicts each next row itself "
            '(task.options.residual = "auto"; set true or false to choose)'
        ]

    def _ordered(self, rows: list) -> list:
        """Rows sorted by ``time_column``; a time that is neither a number nor an ISO date, or one
        given twice, is refused at its line."""
        column = self.options.time_column
        keyed = [(time_value(r, column, self.data.path), r) for r in rows]
        if len({type(t) for t, _ in keyed}) > 1:
            raise DataError(
                f"{self.data.path}: column '{column}' mixes numbers and dates; give every row's time one way."
            )
        keyed.sort(key=lambda kr: kr[0])
        for (a, first), (b, second) in zip(keyed, keyed[1:]):
            if a == b:
                raise DataError(
                    f"{self.data.path}:{second.line}: time {second[column]!r} in column '{column}' is also on line "
                    f"{first.line}; give each row its own time."
                )
        self.times = [t for t, _ in keyed]
        self._check_gaps([r for _, r in keyed])
        return [r for _, r in keyed]

    def _check_gaps(self, rows: list) -> None:
        """Refuse (or, with ``time_gaps = "accept"``, count) times that skip steps of the series' own
        regular step (:mod:`seqpipe.timegrid`): the model reads rows as equally spaced."""
        grid = time_grid(self.times)
        if self.season is None:
            self.season = grid.season
        if not grid.gaps:
            return
        column, first = self.options.time_column, grid.gaps[0]
        before, after = rows[first.after], rows[first.after + 1]
        what = (
            f"{grid.missing} missing step(s) in {len(grid.gaps)} gap(s) in column '{column}' (the series steps by "
            f"{grid.step})"
        )
        if self.options.time_gaps == "accept":
            self.data.account.add(
                "time_gaps",
                grid.missing,
                f"missing time steps in column '{column}' (steps of {grid.step}) "
                'read across as if consecutive (task.options.time_gaps = "accept")',
            )
            return
        raise DataError(
            f"{self.data.path}:{after.line}: {what}: the first from {before[column]!r} (line {before.line}) to "
            f"{after[column]!r}; the model reads rows as equally spaced steps, so add rows for the missing times "
            '(e.g. with interpolated values), or set task.options.time_gaps = "accept" to read them as '
            "consecutive anyway."
        )

    def _windows(self, ends: np.ndarray) -> np.ndarray:
        """The ``window`` scaled rows before each index in ``ends``: [N, window, F]."""
        w = self.options.window
        return np.stack([self.scaled[e - w : e] for e in ends])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        bucket: bool = False,
    ) -> Iterator[Batch]:
        # every window has the same length, so there is no padding for `bucket` to save
        ends = self.targets[split]
        order = torch.randperm(len(ends), generator=generator).numpy() if shuffle else np.arange(len(ends))
        w = self.options.window
        for start in range(0, len(order), batch_size):
            chosen = ends[order[start : start + batch_size]]
            x = torch.from_numpy(self._windows(chosen))  # rows t-w .. t-1
            y = torch.from_numpy(self._windows(chosen + 1))  # rows t-w+1 .. t: the next values after each step
            yield Batch(x, torch.full((len(chosen),), w, dtype=torch.int64), y)

    # -- model --------------------------------------------------------------------------------
    def build_model(
        self, make_topology: Callable[[int], Topology], initial_state: str = "zeros", initial_state_scale: float = 0.1
    ) -> SequenceModel:
        width = len(self.columns)
        topology = make_topology(width)
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        head = nn.Linear(topology.output_size, width)
        if self.residual:  # no change predicted yet: training starts from persistence
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return SequenceModel(
            nn.Identity(),
            topology,
            head,
            initial,
            output="identity",
            per_step=False,
            dropout=self.options.dropout,
            residual=self.residual,
        )

    def loss(self, model: SequenceModel, batch: Batch) -> torch.Tensor:
        predictions, _ = model.run_sequence(batch.x, batch.lengths)  # [B, T, F]: a forecast after every step
        return F.mse_loss(predictions, batch.targets)

    def _unscale(self, values: np.ndarray | torch.Tensor):
        return values * self.std + self.mean

    @torch.no_grad()
    def forecast(self, model: SequenceModel, ends: np.ndarray, horizon: int) -> np.ndarray:
        """Autoregressive forecasts of rows ``ends + k`` for k < horizon, in original units: [N, horizon, F]."""
        model.eval()
        x = torch.from_numpy(self._windows(ends))
        last, state = model(x, torch.full((len(ends),), x.shape[1], dtype=torch.int64))  # [N, F]
        out = [last]
        for _ in range(horizon - 1):
            last, state = model.step(last, state)  # the forecast becomes the next input
            out.append(last)
        return self._unscale(torch.stack(out, dim=1).numpy())

    def _rmse(self, predicted: np.ndarray, actual: np.ndarray) -> float:
        """RMSE on the target columns (the first ones), in original units: over all their values, so with one
        target it is that series' RMSE; several targets should share a unit (or be compared one by one)."""
        k = len(self.target_columns)
        return float(np.sqrt(np.mean((predicted[..., :k].astype(np.float64) - actual[..., :k]) ** 2)))

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, split: str, batch_size: int = 256) -> dict[str, float]:
        ends = self.targets[split]
        k = len(self.target_columns)
        actual = self.series[ends]  # [N, F]
        one_step = self.forecast(model, ends, 1)[:, 0]  # [N, F]
        persistence = self.series[ends - 1]
        scaled = lambda v: (v[:, :k] - self.mean[:k]) / self.std[:k]  # noqa: E731
        metrics = {
            "loss": float(np.mean((scaled(one_step) - scaled(actual)) ** 2)),
            "rmse": self._rmse(one_step, actual),
            "persistence_rmse": self._rmse(persistence, actual),
        }
        if k > 1:
            for i, column in enumerate(self.target_columns):
                metrics[f"rmse_{column}"] = float(np.sqrt(np.mean((one_step[:, i] - actual[:, i]) ** 2)))
                metrics[f"persistence_rmse_{column}"] = float(np.sqrt(np.mean((persistence[:, i] - actual[:, i]) ** 2)))
        metrics["skill"] = 1.0 - metrics["rmse"] / metrics["persistence_rmse"]  # > 0: beats persistence
        m = self.season
        if m is not None and ends[0] >= m:
            metrics["seasonal_naive_rmse"] = self._rmse(self.series[ends - m], actual)  # a season ago
        h = self.options.horizon
        origins = ends[ends + h <= len(self.series)] if split == "test" else ends[ends + h <= ends[-1] + 1]
        if len(origins):
            multi = self.forecast(model, origins, h)  # [N, h, F]
            truth = np.stack([self.series[o : o + h] for o in origins])
            naive = np.repeat(self.series[origins - 1][:, None], h, axis=1)
            metrics[f"rmse_{h}_step"] = self._rmse(multi, truth)
            metrics[f"persistence_rmse_{h}_step"] = self._rmse(naive, truth)
            if m is not None and origins[0] >= m:  # step k from origin o: the value at o + k - m, last season's (k < m)
                seasonal = np.stack([self.series[o - m + np.arange(h) % m] for o in origins])
                metrics[f"seasonal_naive_rmse_{h}_step"] = self._rmse(seasonal, truth)
        if split == "test" and self.options.strong_baseline and k == 1:
            metrics.update(self._arima(ends, origins, actual[:, 0]))
        metrics["examples"] = len(ends)
        return metrics

    def _arima(self, ends: np.ndarray, origins: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
        """ARIMA on the target alone, same test values, one step and ``horizon`` steps ahead (see seqpipe.baselines)."""
        h = self.options.horizon
        series = self.series[:, 0]
        fitted = arima_forecasts(series, int(self.targets["validation"][0]), ends, origins, h)
        if fitted is None:  # no stationary, invertible fit of any order: no ARIMA figures
            return {}
        one_step, multi, order = fitted
        result: dict[str, Any] = {
            "arima_rmse": float(np.sqrt(np.mean((one_step - actual) ** 2))),
            "arima_order": list(order),
        }
        if len(origins):
            truth = np.stack([series[o : o + h] for o in origins])
            result[f"arima_rmse_{h}_step"] = float(np.sqrt(np.mean((multi - truth) ** 2)))
        return result

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, len(self.columns))  # [B, features]

    def sequence_graph(self, model: SequenceModel, opset: int) -> onnx.ModelProto:
        """``x`` [batch, time, F] scaled values and ``lengths`` in; ``y`` [batch, F], the scaled
        forecast of the row after each sequence's last one, and ``state_out.*`` out."""
        return sequence_graph(model, opset, len(self.columns), "seqpipe_forecast_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Test windows with ragged lengths (1 … window), each holding its most recent values first-aligned."""
        ends = self.targets[split][:limit]
        w = self.options.window
        lengths = np.array([w - (i % w) for i in range(len(ends))], dtype=np.int64)
        x = np.zeros((len(ends), w, len(self.columns)), np.float32)
        for row, (end, length) in enumerate(zip(ends, lengths)):
            x[row, :length] = self.scaled[end - length : end]
        return x, lengths

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """One-step RMSE of an exported graph (any precision) on ``split``, in original units."""
        ends = self.targets[split]
        x = self._windows(ends)
        y, _ = runner.final(x, np.full(len(ends), x.shape[1], dtype=np.int64))
        return {"rmse": self._rmse(self._unscale(y), self.series[ends])}

    def encoding_spec(self) -> dict[str, Any]:
        o = self.options
        return {
            "input": {
                "dtype": "float32",
                "kind": "numeric",
                "features": len(self.columns),
                "columns": self.columns,
                "targets": self.target_columns,
                "time_column": o.time_column,
                "time_gaps": o.time_gaps,
                "window": o.window,
                "scaling": {
                    "kind": o.scaling,
                    "mean": [float(m) for m in self.mean],
                    "std": [float(s) for s in self.std],
                    "apply": "x[t, f] = (value[t][columns[f]] - mean[f]) / std[f]",
                },
            },
            "output": {
                "kind": "forecast",
                "size": len(self.columns),
                "columns": self.columns,
                "targets": self.target_columns,
                "horizon": o.horizon,
                "residual": self.residual,
                "read": "y after the step that read row t is the scaled forecast of row t+1 (every column, in "
                "input.columns order, the graph having added the row read when residual); value = y * std + mean; feed "
                "y back as the next x to forecast further ahead",
            },
        }

    # -- report -------------------------------------------------------------------------------
    def write_report(self, model: SequenceModel, run_dir, log: Callable[[str], None]) -> None:
        """``forecast.png``: the test part of the (first) target, actual against one-step forecasts,
        persistence and one multi-step forecast from the start of the test part."""
        from seqpipe.plots import plot_forecast

        ends = self.targets["test"]
        h = min(self.options.horizon * 2, len(ends))
        times = [self.times[i] for i in ends]
        plot_forecast(
            times,
            self.series[ends, 0],
            self.forecast(model, ends, 1)[:, 0, 0],
            self.series[ends - 1, 0],
            times[:h],
            self.forecast(model, ends[:1], h)[0, :, 0],
            run_dir / "forecast.png",
            target=self.target_columns[0],
            time_label=self.options.time_column,
        )
        log(f"plot: {run_dir / 'forecast.png'}")


@hookimpl
def register_tasks(register):
    register("forecast", ForecastTask)
