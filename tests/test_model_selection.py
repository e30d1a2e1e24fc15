"""Which epoch is kept: ties in the monitored metric go to the lower validation loss, and a
classifier's tiny validation split picks its epoch by loss unless the pipeline says otherwise."""

from __future__ import annotations

import json

from click.testing import CliRunner

from seqpipe.cli import main
from seqpipe.selection import SMALL_LABEL, SMALL_SPLIT, too_small
from seqpipe.training import better


def test_a_tie_in_the_monitored_metric_goes_to_the_lower_validation_loss():
    assert better(1.0, 0.30, 1.0, 0.52)  # the same perfect macro-F1, surer answers: kept
    assert not better(1.0, 0.60, 1.0, 0.52)
    assert better(0.9, 9.0, 0.8, 0.1)  # a better metric wins whatever its loss
    assert not better(0.8, 0.01, 0.9, 9.0)
    assert better(0.1, 0.5, float("-inf"), float("inf"))  # the first epoch is always kept


class _Labels:
    def __init__(self, counts):
        self.counts = counts

    def validation_label_counts(self):
        return self.counts


def test_a_validation_split_is_too_small_under_50_examples_or_5_of_a_label():
    assert too_small(_Labels({"a": 20, "b": 21}), {"validation": 41}) == f"41 examples (under {SMALL_SPLIT})"
    why = too_small(_Labels({"a": 300, "b": 4, "c": 2}), {"validation": 306})
    assert why == f"306 examples, 2 label(s) with under {SMALL_LABEL} ('c' 2, 'b' 4)"
    assert too_small(_Labels({"a": 300, "b": 5}), {"validation": 305}) is None
    # a task that says nothing of labels (forecast's RMSE, a tagger's tokens) keeps its own metric
    assert too_small(_Labels(None), {"validation": 3}) is None


def _tiny_pipeline(tmp_path, small_csv, write_pipeline, training: str = ""):
    p = write_pipeline(tmp_path / "tiny.toml", small_csv, epochs=3)
    if training:
        p.write_text(p.read_text().replace("patience = 1", f"patience = 1\n{training}"))
    return p


def test_a_tiny_validation_split_picks_the_epoch_by_loss_and_says_so(tmp_path, small_csv, write_pipeline):
    """200 subjects leave 20 for validation: macro-F1 moves in steps of a twentieth there, so the
    run keeps the epoch of lowest validation loss, says so at check and run, shows macro-F1 once on
    each epoch line and still places its test macro-F1 against the baselines."""
    p = _tiny_pipeline(tmp_path, small_csv, write_pipeline)
    checked = CliRunner().invoke(main, ["check", str(p)])
    assert checked.exit_code == 0, checked.output
    assert "monitor: validation loss (min)" in checked.output
    note = [
        line for line in checked.output.splitlines() if line.startswith("validation: 20 examples (under 50), too few")
    ]
    assert len(note) == 1 and "training.monitor" in note[0], checked.output

    result = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert note[0] in result.output.splitlines()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["training"]["monitor"], metrics["training"]["monitor_mode"]) == ("loss", "min")
    history = metrics["training"]["history"]
    losses = [r["validation"]["loss"] for r in history]
    assert metrics["training"]["best_epoch"] == history[losses.index(min(losses))]["epoch"]
    epoch_lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == len(history)
    for line, record in zip(epoch_lines, history):
        assert (
            line.count(f"{record['validation']['loss']:.4f}") == 1
            and f"macro_f1 {record['validation']['macro_f1']:.4f}" in line
        )
    assert metrics["against_baselines"]["metric"] == "macro_f1"  # judged on the task's metric, picked by loss
    assert any(
        line.startswith(f"baselines: test macro_f1 {metrics['test']['macro_f1']:.4f}")
        for line in result.output.splitlines()
    )


def test_a_monitor_the_pipeline_names_is_kept_whatever_the_split(tmp_path, small_csv, write_pipeline):
    p = _tiny_pipeline(tmp_path, small_csv, write_pipeline, 'monitor = "macro_f1"')
    checked = CliRunner().invoke(main, ["check", str(p)])
    assert checked.exit_code == 0, checked.output
    assert "monitor: validation macro_f1 (max)" in checked.output and "too few" not in checked.output
