"""Forecasting real-valued series: after reading values up to time t, predict the value at t+1.

The series is split in time order (train, then validation, then test: no future leaks into
training), scaled with statistics of the training part only, and cut into windows of
``window`` values. Training is teacher-forced at every step (many-to-many); multi-step forecasts
feed each prediction back as the next input (autoregressive), exactly as a served step graph
would. The baseline is persistence: tomorrow equals today.
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
from torchmetrics.functional import mean_squared_error

from seqpipe import hookimpl
from seqpipe.onnx.native import sequence_graph
from seqpipe.contracts import Task, Topology
from seqpipe.baselines import arima_forecasts
from seqpipe.data import number, read_records
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel


class ForecastOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value_column: str = Field("value", description="column holding the series, one row per time step, oldest first")
    window: int = Field(24, ge=2, description="past values the model reads before each forecast")
    horizon: int = Field(5, ge=1, description="steps ahead for the multi-step (autoregressive) evaluation")
    scaling: Literal["standard", "none"] = Field("standard", description="standardise with the training part's mean and std")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the head's input (training only)")
    strong_baseline: bool = Field(True, description="also report an ARIMA model's RMSE on the test part (statsmodels, order by "
                                  "AIC on the training part); false: skip it")


@dataclass
class Batch:
    x: torch.Tensor  # [B, T, 1] scaled values
    lengths: torch.Tensor  # [B]
    targets: torch.Tensor  # [B, T, 1] the next value after each step


class ForecastTask(Task):
    Options = ForecastOptions
    monitor = "rmse"
    monitor_mode = "min"
    predict_example = "series.csv --steps 5   (a CSV of past values, oldest first)"
    example_pipeline = {"data": {"dataset": "sunspots"}, "task": {"options": {"value_column": "SUNACTIVITY"}}}

    def __init__(self, options: ForecastOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.series = np.zeros(0, np.float32)  # raw values
        self.scaled = np.zeros(0, np.float32)
        self.mean, self.std = 0.0, 1.0
        self.targets: dict[str, np.ndarray] = {}  # split -> indices of the values it forecasts
        self.examples: dict[str, np.ndarray] = {}  # train: window end indices (len(...) counts examples)

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o, d = self.options, self.data.config
        if self.data.validation_path or self.data.test_path:
            raise DataError(f"{self.data.where}: the forecast task splits one series by time (the last values are the test part); "
                            "give the whole series as data.path and set data.validation_fraction and data.test_fraction.")
        rows = read_records(self.data.path, self.data.format, [o.value_column], self.data.where)
        self.series = np.array([number(r, o.value_column, self.data.path, "forecasting needs numbers") for r in rows], dtype=np.float32)
        n = len(self.series)
        n_test, n_val = round(n * d.test_fraction), round(n * d.validation_fraction)
        train_end = n - n_test - n_val
        if train_end <= o.window + 1 or n_val < 1 or n_test < 1:
            raise DataError(f"{self.data.path}: {n} values are too few for window {o.window} with these split fractions; "
                            "lower task.options.window or add data.")
        train = self.series[:train_end]
        if o.scaling == "standard":  # fitted on the training part only
            self.mean, self.std = float(train.mean()), float(train.std() or 1.0)
        self.scaled = ((self.series - self.mean) / self.std).astype(np.float32)
        self.targets = {"train": np.arange(o.window, train_end), "validation": np.arange(train_end, train_end + n_val),
                        "test": np.arange(train_end + n_val, n)}
        self.examples = {"train": self.targets["train"]}
        return {split: len(idx) for split, idx in self.targets.items()}

    def _windows(self, ends: np.ndarray) -> np.ndarray:
        """The ``window`` scaled values before each index in ``ends``: [N, window, 1]."""
        w = self.options.window
        return np.stack([self.scaled[e - w:e] for e in ends])[:, :, None]

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        ends = self.targets[split]
        order = torch.randperm(len(ends), generator=generator).numpy() if shuffle else np.arange(len(ends))
        w = self.options.window
        for start in range(0, len(order), batch_size):
            chosen = ends[order[start:start + batch_size]]
            x = torch.from_numpy(self._windows(chosen))  # values t-w .. t-1
            y = torch.from_numpy(self._windows(chosen + 1))  # values t-w+1 .. t: the next value after each step
            yield Batch(x, torch.full((len(chosen),), w, dtype=torch.int64), y)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, make_topology: Callable[[int], Topology], initial_state: str = "zeros",
                    initial_state_scale: float = 0.1) -> SequenceModel:
        topology = make_topology(1)
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        return SequenceModel(nn.Identity(), topology, nn.Linear(topology.output_size, 1), initial, output="identity",
                             per_step=False, dropout=self.options.dropout)

    def loss(self, model: SequenceModel, batch: Batch) -> torch.Tensor:
        predictions, _ = model.run_sequence(batch.x, batch.lengths)  # [B, T, 1]: a forecast after every step
        return F.mse_loss(predictions, batch.targets)

    def _unscale(self, values: np.ndarray | torch.Tensor):
        return values * self.std + self.mean

    @torch.no_grad()
    def forecast(self, model: SequenceModel, ends: np.ndarray, horizon: int) -> np.ndarray:
        """Autoregressive forecasts of values ``ends + k`` for k < horizon, in original units: [N, horizon]."""
        model.eval()
        x = torch.from_numpy(self._windows(ends))
        last, state = model(x, torch.full((len(ends),), x.shape[1], dtype=torch.int64))  # [N, 1]
        out = [last]
        for _ in range(horizon - 1):
            last, state = model.step(last, state)  # the forecast becomes the next input
            out.append(last)
        return self._unscale(torch.cat(out, dim=1).numpy())

    def evaluate(self, model: SequenceModel, split: str, batch_size: int = 256) -> dict[str, float]:
        ends = self.targets[split]
        actual = torch.from_numpy(self.series[ends])
        one_step = torch.from_numpy(self.forecast(model, ends, 1)[:, 0])
        persistence = torch.from_numpy(self.series[ends - 1])
        scaled_loss = float(F.mse_loss((one_step - self.mean) / self.std, (actual - self.mean) / self.std))
        metrics = {"loss": scaled_loss,
                   "rmse": float(mean_squared_error(one_step, actual, squared=False)),
                   "persistence_rmse": float(mean_squared_error(persistence, actual, squared=False))}
        metrics["skill"] = 1.0 - metrics["rmse"] / metrics["persistence_rmse"]  # > 0: beats persistence
        h = self.options.horizon
        origins = ends[ends + h <= len(self.series)] if split == "test" else ends[ends + h <= ends[-1] + 1]
        if len(origins):
            multi = torch.from_numpy(self.forecast(model, origins, h))  # [N, h]
            truth = torch.from_numpy(np.stack([self.series[o:o + h] for o in origins]))
            naive = torch.from_numpy(np.repeat(self.series[origins - 1][:, None], h, axis=1))
            metrics[f"rmse_{h}_step"] = float(mean_squared_error(multi, truth, squared=False))
            metrics[f"persistence_rmse_{h}_step"] = float(mean_squared_error(naive, truth, squared=False))
        if split == "test" and self.options.strong_baseline:
            metrics.update(self._arima(ends, origins, actual))
        metrics["examples"] = len(ends)
        return metrics

    def _arima(self, ends: np.ndarray, origins: np.ndarray, actual: torch.Tensor) -> dict[str, Any]:
        """ARIMA on the same test values, one step and ``horizon`` steps ahead (see seqpipe.baselines)."""
        h = self.options.horizon
        one_step, multi, order = arima_forecasts(self.series, int(self.targets["validation"][0]), ends, origins, h)
        result: dict[str, Any] = {"arima_rmse": float(np.sqrt(np.mean((one_step - actual.numpy()) ** 2))), "arima_order": list(order)}
        if len(origins):
            truth = np.stack([self.series[o:o + h] for o in origins])
            result[f"arima_rmse_{h}_step"] = float(np.sqrt(np.mean((multi - truth) ** 2)))
        return result

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, 1)  # [B, features]

    def sequence_graph(self, model: SequenceModel, opset: int) -> onnx.ModelProto:
        """``x`` [batch, time, 1] scaled values and ``lengths`` in; ``y`` [batch, 1], the scaled
        forecast of the value after each sequence's last one, and ``state_out.*`` out."""
        return sequence_graph(model, opset, 1, "seqpipe_forecast_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Test windows with ragged lengths (1 … window), each holding its most recent values first-aligned."""
        ends = self.targets[split][:limit]
        w = self.options.window
        lengths = np.array([w - (i % w) for i in range(len(ends))], dtype=np.int64)
        x = np.zeros((len(ends), w, 1), np.float32)
        for row, (end, length) in enumerate(zip(ends, lengths)):
            x[row, :length, 0] = self.scaled[end - length:end]
        return x, lengths

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """One-step RMSE of an exported graph (any precision) on ``split``, in original units."""
        ends = self.targets[split]
        x = self._windows(ends)
        y, _ = runner.final(x, np.full(len(ends), x.shape[1], dtype=np.int64))
        return {"rmse": float(mean_squared_error(torch.from_numpy(self._unscale(y[:, 0])), torch.from_numpy(self.series[ends]),
                                                 squared=False))}

    def encoding_spec(self) -> dict[str, Any]:
        o = self.options
        return {
            "input": {"dtype": "float32", "kind": "numeric", "features": 1, "column": o.value_column, "window": o.window,
                      "scaling": {"kind": o.scaling, "mean": self.mean, "std": self.std,
                                  "apply": "x = (value - mean) / std"}},
            "output": {"kind": "forecast", "size": 1, "horizon": o.horizon,
                       "read": "y after the step that read value t is the scaled forecast of value t+1; value = y * std + mean; "
                               "feed y back as the next x to forecast further ahead"},
        }

    # -- report -------------------------------------------------------------------------------
    def write_report(self, model: SequenceModel, run_dir, log: Callable[[str], None]) -> None:
        """``forecast.png``: the test years, actual against one-step forecasts, persistence and one
        multi-step forecast from the start of the test part."""
        from seqpipe.plots import plot_forecast

        ends = self.targets["test"]
        h = min(self.options.horizon * 2, len(ends))
        plot_forecast(ends, self.series[ends], self.forecast(model, ends, 1)[:, 0], self.series[ends - 1],
                      ends[:h], self.forecast(model, ends[:1], h)[0], run_dir / "forecast.png")
        log(f"plot: {run_dir / 'forecast.png'}")


@hookimpl
def register_tasks(register):
    register("forecast", ForecastTask)
