"""The README's first command (docs/index.md), for real: the default pipeline on the bundled data.

The default is `pipelines/spam-words.toml` (character-aware words, BiLSTM, mean pooling). The
issue's bar, recorded in docs/benchmarks.md: test macro-F1 at least the character n-gram TF-IDF baseline's
on the same split, as a mean over three training seeds (0.9045 against 0.8963). One seed moves by
up to three points (0.8857-0.9152, 1 thread each), and a different CPU's float rounding changes a
trajectory, so this test guards against regressions with a margin: within 0.03 of the baseline
the same run reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqpipe.cli import main

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "spam-words.toml"


@pytest.mark.slow
def test_default_pipeline_trains_exports_and_passes_parity(tmp_path):
    result = CliRunner().invoke(main, ["run", str(PIPELINE), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["macro_f1"] >= 0.87 and test["macro_f1"] >= test["tfidf_macro_f1"] - 0.03, test
    assert test["examples"] == 861  # 20% of 4,303 unique subjects, stratified
    parity = json.loads((tmp_path / "run" / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5
    assert set(parity["graphs"]) == {"sequence"}  # bidirectional: no step graph
