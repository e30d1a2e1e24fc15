"""A run directory says what state it is in (status.json), keeps a per-epoch log (history.jsonl),
honours a time budget, and is never served by `seqpipe predict` unless it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqpipe.cli import main


def pipeline(path: Path, data: Path, training: str, export: str = "") -> Path:
    path.write_text(f'[data]\npath = "{data.as_posix()}"\n[model]\nhidden_size = 16\n[task.options]\nmax_length = 40\n'
                    f'embedding_size = 8\n[training]\nbatch_size = 32\n{training}\n[export]\nparity_sequences = 40\n{export}\n',
                    encoding="utf-8")
    return path


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def test_a_finished_run_is_done_and_logged_epoch_by_epoch(tmp_path, small_csv):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline(tmp_path / "p.toml", small_csv, "epochs = 3\npatience = 5")), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert status(run)["state"] == "done"
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    history = json.loads((run / "metrics.json").read_text())["training"]["history"]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines == json.loads(json.dumps(history))


def test_the_time_budget_stops_training_and_still_exports(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 50\npatience = 50\nmax_minutes = 0.0001")
    result = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "time budget: " in result.output and "spent after epoch 1; stopping here" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 1 and json.loads((run / "parity.json").read_text())["passed"]
    assert status(run)["state"] == "done"


def test_a_failed_run_says_so_and_is_not_served(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 1", "parity_tolerance = 1e-30")
    result = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
    assert result.exit_code == 1, result.output
    recorded = status(run)
    assert recorded["state"] == "failed" and "torch and onnxruntime differ" in recorded["error"]
    served = CliRunner().invoke(main, ["predict", str(run), "hello"])
    assert served.exit_code == 2 and served.output.strip().splitlines() == [
        f"error: {run}: this run is failed (status.json: {recorded['error']}), not a finished model; "
        f"run the pipeline again: seqpipe run {run / 'pipeline.toml'}"]


@pytest.mark.parametrize("sent,code,line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_run_records_it_and_exits_with_the_signal_code(tmp_path, small_csv, sent, code, line):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 10000\npatience = 10000")
    proc = subprocess.Popen([sys.executable, "-m", "seqpipe", "run", str(p), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not ((run / "history.jsonl").is_file() and (run / "history.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert status(run)["state"] == "interrupted"
    served = CliRunner().invoke(main, ["predict", str(run), "hello"])
    assert served.exit_code == 2 and "this run is interrupted" in served.output
