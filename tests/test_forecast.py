"""The forecast task on the bundled sunspots series: time-ordered split, train-only scaling,
teacher-forced training, autoregressive forecasts, ONNX graphs proven equal, predict from ONNX alone."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import load_trained, predict_without_torch
from seqpipe.cli import main

REPO = Path(__file__).resolve().parents[1]
SUNSPOTS = REPO / "seqpipe" / "datasets" / "sunspots" / "sunspots.csv"


def _pipeline(path: Path, data: str = 'dataset = "sunspots"', epochs: int = 12, cell: str = "gru") -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [data]
        {data}
        [model]
        cell = "{cell}"
        hidden_size = 16
        [task]
        name = "forecast"
        [task.options]
        value_column = "SUNACTIVITY"
        window = 12
        horizon = 3
        [training]
        epochs = {epochs}
        batch_size = 16
        patience = 50
    """)
    )
    return path


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    result = CliRunner().invoke(main, ["run", str(_pipeline(root / "p.toml")), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def forecast_model(forecast_run):
    return load_trained(forecast_run)


def test_run_writes_metrics_plot_and_exact_graphs(forecast_run):
    out = forecast_run / "out"
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert {"rmse", "persistence_rmse", "skill", "rmse_3_step", "persistence_rmse_3_step"} <= set(test)
    assert test["skill"] == pytest.approx(1 - test["rmse"] / test["persistence_rmse"])
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}
    assert parity["graphs"]["step"]["min_length"] == 1  # ragged windows, down to a single value


def test_scaling_is_fitted_on_the_training_years_only(forecast_model):
    task, _ = forecast_model
    values = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)[:, 1]
    train_end = task.targets["validation"][0]
    assert task.mean == pytest.approx(values[:train_end].mean(), rel=1e-5)
    assert task.mean != pytest.approx(values.mean(), rel=1e-3)
    assert task.targets["test"][-1] == len(values) - 1  # the test part is the most recent years


def test_predict_from_onnx_matches_torch_autoregression(forecast_run, forecast_model, tmp_path, torch_blocked_env):
    env = torch_blocked_env
    task, model = forecast_model
    history = tmp_path / "history.csv"
    values = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)[:, 1]
    cut = 280
    history.write_text("YEAR,SUNACTIVITY\n" + "\n".join(f"{1700 + i},{v}" for i, v in enumerate(values[:cut])))
    result = CliRunner().invoke(main, ["predict", str(forecast_run / "out"), str(history), "--steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    served = json.loads(result.stdout.strip().splitlines()[-1])["forecast"]
    expected = task.forecast(model, np.array([cut]), 4)[0, :, 0]  # [steps, columns]: the one column
    assert np.allclose(served, expected, rtol=1e-5, atol=1e-3)
    assert predict_without_torch(env, str(forecast_run / "out"), str(history), "--steps", "4")[0]["forecast"] == served
    assert "short_history" not in json.loads(result.stdout.strip().splitlines()[-1])


def test_a_history_shorter_than_the_window_is_said_not_silent(forecast_run, tmp_path):
    values = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)[:, 1]
    history = tmp_path / "short.csv"
    history.write_text("YEAR,SUNACTIVITY\n" + "\n".join(f"{1700 + i},{v}" for i, v in enumerate(values[:5])))
    said = CliRunner().invoke(main, ["predict", str(forecast_run / "out"), str(history), "--steps", "2"])
    assert said.exit_code == 0, said.output
    assert (
        "(from 5 past rows; the model was trained on 12: give 12 or more for the forecasts it was tested on)"
        in said.output
    )
    result = json.loads(
        CliRunner().invoke(main, ["predict", str(forecast_run / "out"), str(history), "--steps", "2", "--json"]).stdout
    )
    assert result["short_history"] == {"rows": 5, "window": 12} and result["history_used"] == 5


numeric_batches = st.integers(1, 5).flatmap(
    lambda b: st.tuples(st.lists(st.integers(1, 15), min_size=b, max_size=b), st.integers(0, 2**31 - 1))
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=numeric_batches)
def test_numeric_graphs_agree_on_ragged_batches(forecast_run, forecast_model, case):
    """Sequence graph, step loop and torch agree on drawn batches; padding never changes a result."""
    from seqpipe.serving.runtime import SequenceRunner, StepRunner

    _, model = forecast_model
    lengths_list, seed = case
    lengths = np.array(lengths_list, dtype=np.int64)
    x = np.random.default_rng(seed).normal(size=(len(lengths), int(lengths.max()), 1)).astype(np.float32)
    out = forecast_run / "out" / "onnx"
    y_seq, s_seq = SequenceRunner(out / "sequence.onnx", device="cpu").run(x, lengths)
    _, last, s_step = StepRunner(out / "step.onnx", device="cpu").run_padded(x, lengths)
    with torch.no_grad():
        y_torch, s_torch = model.sequence_output(torch.from_numpy(x), torch.from_numpy(lengths))
    assert np.abs(y_seq - y_torch.numpy()).max() <= 1e-5 and np.abs(last - y_seq).max() <= 1e-5
    assert np.abs(s_seq["h"] - s_torch[0].numpy()).max() <= 1e-5 and np.abs(s_step["h"] - s_seq["h"]).max() <= 1e-5
    alone, _ = SequenceRunner(out / "sequence.onnx", device="cpu").run(x[:1, : lengths[0]], lengths[:1])
    assert np.abs(alone[0] - y_seq[0]).max() <= 1e-5


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("YEAR,SUNACTIVITY\n1700,5\n1701,lots\n", "s.csv:3: column 'SUNACTIVITY' holds 'lots', not a number"),
        ("YEAR,OTHER\n1700,5\n", "no column 'SUNACTIVITY'"),
        ("YEAR,SUNACTIVITY\n" + "".join(f"{1700 + i},{i}\n" for i in range(10)), "too few"),
    ],
)
def test_bad_series_is_one_line(tmp_path, content, fragment):
    (tmp_path / "s.csv").write_text(content)
    result = CliRunner().invoke(
        main, ["run", str(_pipeline(tmp_path / "p.toml", data='path = "s.csv"')), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_trend_past_the_training_range_is_followed_by_default_and_not_without_the_residual(tmp_path):
    """A rising series whose test part lies wholly above the training part's values: the default
    forecaster finds the trend (KPSS) and predicts the change from the row read, beating persistence
    there; predicting the next row itself, its output is bounded by what the head makes of a
    saturated state, and it falls behind."""
    rng = np.random.default_rng(0)
    t = np.arange(400)
    values = 0.05 * t + np.sin(t / 3.0) + 0.1 * rng.normal(size=len(t))
    (tmp_path / "trend.csv").write_text("value\n" + "".join(f"{v:.4f}\n" for v in values), encoding="utf-8")
    skill = {}
    for residual in ("auto", "false"):
        pipeline = tmp_path / f"{residual}.toml"
        pipeline.write_text(
            textwrap.dedent(f"""
            [data]
            path = "trend.csv"
            [model]
            hidden_size = 16
            [task]
            name = "forecast"
            [task.options]
            window = 12
            residual = {'"auto"' if residual == "auto" else residual}
            strong_baseline = false
            [training]
            epochs = 30
            batch_size = 16
            patience = 30
        """),
            encoding="utf-8",
        )
        result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / residual)])
        assert result.exit_code == 0, result.output
        assert ("forecast: the training part of 'value' is not level-stationary" in result.output) == (
            residual == "auto"
        )
        assert json.loads((tmp_path / residual / "parity.json").read_text())["passed"]
        skill[residual] = json.loads((tmp_path / residual / "metrics.json").read_text())["test"]["skill"]
    assert skill["auto"] > 0.1 and skill["false"] < 0, skill


# -- covariates and a time column ------------------------------------------------------------------------


def _weather(path: Path, days: int = 300, shuffled: bool = True) -> Path:
    """A daily series whose target follows a covariate one day late, written in shuffled row order."""
    import datetime
    import random

    rng = np.random.default_rng(0)
    driver = np.sin(np.arange(days) / 6.0) + 0.1 * rng.normal(size=days)
    target = np.concatenate([[0.0], driver[:-1]]) + 0.05 * rng.normal(size=days)
    start = datetime.date(2020, 1, 1)
    rows = [
        f"{(start + datetime.timedelta(days=i)).strftime('%Y/%m/%d')},{driver[i]:.4f},{target[i]:.4f}"
        for i in range(days)
    ]
    if shuffled:
        random.Random(0).shuffle(rows)
    path.write_text("date,driver,target\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _covariate_pipeline(path: Path, data: Path) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [data]
        path = "{data.name}"
        [model]
        hidden_size = 16
        [task]
        name = "forecast"
        [task.options]
        target_columns = ["target"]
        input_columns = ["driver"]
        time_column = "date"
        window = 10
        horizon = 3
        [training]
        epochs = 15
        batch_size = 16
    """)
    )
    return path


@pytest.mark.slow
def test_covariates_are_read_in_time_order_and_served_from_onnx(tmp_path, torch_blocked_env):
    data = _weather(tmp_path / "w.csv")
    pipeline = _covariate_pipeline(tmp_path / "p.toml", data)
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    task, model = load_trained(tmp_path)
    assert task.columns == ["target", "driver"] and [t.day for t in task.times[:3]] == [1, 2, 3]  # sorted by date
    test = json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]
    assert test["rmse"] <= 0.7 * test["persistence_rmse"], test  # the covariate leads the target by a day
    spec = json.loads(__import__("onnx").load(str(tmp_path / "out" / "onnx" / "step.onnx")).metadata_props[0].value)
    assert spec["encoding"]["input"]["columns"] == ["target", "driver"] and spec["encoding"]["input"]["features"] == 2
    history = tmp_path / "history.csv"
    ordered = sorted(data.read_text().splitlines()[1:])[:200]
    history.write_text("date,driver,target\n" + "\n".join(ordered) + "\n", encoding="utf-8")
    served = predict_without_torch(torch_blocked_env, str(tmp_path / "out"), str(history), "--steps", "3")[0][
        "forecast"
    ]
    expected = task.forecast(model, np.array([200]), 3)[0]  # [steps, columns], from the same 200 rows
    assert np.allclose(served["target"], expected[:, 0], rtol=1e-4, atol=1e-4)
    assert np.allclose(served["driver"], expected[:, 1], rtol=1e-4, atol=1e-4)


def test_a_repeated_or_unreadable_time_names_the_line(tmp_path):
    data = _weather(tmp_path / "w.csv", shuffled=False)
    lines = data.read_text().splitlines()
    lines[5] = lines[4].split(",")[0] + "," + lines[5].split(",", 1)[1]  # row 5's date again
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(_covariate_pipeline(tmp_path / "p.toml", data))])
    assert result.exit_code == 2 and f"{data}:6: time '2020/01/04' in column 'date' is also on line 5" in result.output
    lines[5] = "yesterday," + lines[5].split(",", 1)[1]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(_covariate_pipeline(tmp_path / "p.toml", data))])
    assert (
        result.exit_code == 2
        and f"{data}:6: column 'date' holds 'yesterday', neither a number nor an ISO date" in result.output
    )


@pytest.mark.slow
def test_predict_orders_history_by_time_and_refuses_missing_values(tmp_path):
    data = _weather(tmp_path / "w.csv")
    result = CliRunner().invoke(
        main, ["run", str(_covariate_pipeline(tmp_path / "p.toml", data)), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    rows = sorted(data.read_text().splitlines()[1:])[:100]
    forecasts = []
    for name, ordered in (("oldest.csv", rows), ("newest.csv", rows[::-1])):
        (tmp_path / name).write_text("date,driver,target\n" + "\n".join(ordered) + "\n", encoding="utf-8")
        served = CliRunner().invoke(
            main, ["predict", str(tmp_path / "out"), str(tmp_path / name), "--steps", "2", "--json"]
        )
        assert served.exit_code == 0, served.output
        forecasts.append(json.loads(served.stdout.strip().splitlines()[-1])["forecast"])
    assert forecasts[0] == forecasts[1]  # the date column orders the rows, as in training
    rows[-1] = rows[-1].rsplit(",", 1)[0] + ",nan"
    (tmp_path / "gap.csv").write_text("date,driver,target\n" + "\n".join(rows) + "\n", encoding="utf-8")
    served = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), str(tmp_path / "gap.csv")])
    assert served.exit_code == 2 and f"{tmp_path / 'gap.csv'}:101: a missing or infinite value" in served.output
