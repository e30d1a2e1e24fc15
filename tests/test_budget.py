"""The training budget a pipeline leaves unset is fitted to the training split's size."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from seqpipe.budget import MIN_STEPS, fitted_budget
from seqpipe.cli import main
from seqpipe.config import TrainingConfig


@pytest.mark.parametrize("examples", [1, 7, 33, 90, 229, 600, 1599, 3400, 100_000])
def test_a_small_split_gets_several_steps_an_epoch_and_enough_epochs(examples):
    fitted, note = fitted_budget(TrainingConfig(), examples)
    steps = -(-examples // fitted.batch_size)
    assert 8 <= fitted.batch_size <= 64 and fitted.epochs <= 200 and fitted.patience >= 4
    assert steps * fitted.epochs >= MIN_STEPS or fitted.epochs == 200
    assert fitted.patience == max(4, fitted.epochs // 5)
    if examples > 64 * 24:  # 25 batches of 64 or more: the static defaults reach MIN_STEPS, and nothing is said
        assert (fitted.batch_size, fitted.epochs, fitted.patience, note) == (64, 20, 4, None)
    else:
        assert note.startswith(f"training: {examples} training examples: ") and "set training." in note


def test_a_budget_the_pipeline_sets_is_kept():
    given = TrainingConfig.model_validate({"batch_size": 64, "epochs": 20, "patience": 4})
    assert fitted_budget(given, 33) == (given, None)
    fitted, note = fitted_budget(TrainingConfig.model_validate({"batch_size": 4}), 33)  # the others fit around it
    assert (fitted.batch_size, fitted.epochs, fitted.patience) == (4, 56, 11)
    assert "batch_size" not in note and "epochs 56, patience 11" in note


def test_check_and_run_use_and_say_the_fitted_budget(tmp_path, small_csv):
    """200 subjects leave 140 to train on: 18 a batch, 63 epochs at most, as `check` says and
    `run` trains (config.json records the values used)."""
    p = tmp_path / "unset.toml"
    p.write_text(
        f'[data]\npath = "{small_csv.as_posix()}"\n\n[input]\nmax_length = 20\n\n[model]\nhidden_size = 8\n\n'
        "[task.options]\nembedding_size = 4\nstrong_baseline = false\n\n[training]\nmax_minutes = 0.02\n\n"
        '[export]\nexporter = "torchscript"\nparity_sequences = 8\n',
        encoding="utf-8",
    )
    checked = CliRunner().invoke(main, ["check", str(p)])
    assert checked.exit_code == 0, checked.output
    line = "training: 140 training examples: batch_size 18, epochs 63, patience 12"
    assert line in checked.output
    result = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert line in result.output
    assert any(l.startswith("epoch   1/63 ") for l in result.output.splitlines())  # noqa: E741
    used = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert (used["batch_size"], used["epochs"], used["patience"]) == (18, 63, 12)
