"""Each task's ready-made pipeline, run as shipped on its bundled data, meets its bar.

These are the measurements docs/benchmarks.md's table reports, re-taken on every CI run (a few
minutes together on 2 cores). The bars: POS accuracy >= 0.92 and above the most-frequent-tag
baseline; sunspot RMSE at least 20% below persistence; names beat the bigram baseline;
grapheme-to-phoneme with attention beats the same model without it; speaker recognition from
number vectors far above the majority class; Japanese entity F1 above the most-frequent-tag
baseline's; transliteration chrF above the nearest-neighbour baseline's; the wind forecast with
covariates at most 0.9 × persistence; the streaming character-level spam classifier (spam.toml)
macro-F1 >= 0.84. (The default, spam-words.toml, has its own test; the longer spam-bigru and
pos-bidirectional runs are measured by hand and checked with `seqpipe check`.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqpipe.cli import main

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def _run(name: str, out: Path) -> tuple[dict, dict]:
    result = CliRunner().invoke(main, ["run", str(PIPELINES / f"{name}.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "parity.json").read_text())


@pytest.mark.slow
def test_pos_tagger_beats_the_bar_and_the_baseline(tmp_path):
    metrics, parity = _run("pos", tmp_path / "pos")
    test = metrics["test"]
    assert test["accuracy"] >= 0.92 and test["accuracy"] > test["baseline_accuracy"], test
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}


@pytest.mark.slow
def test_sunspot_forecast_is_20_percent_below_persistence(tmp_path):
    metrics, parity = _run("sunspots", tmp_path / "sunspots")
    test = metrics["test"]
    assert test["rmse"] <= 0.8 * test["persistence_rmse"], test
    assert test["rmse"] < test["arima_rmse"], test  # and below the statsmodels baseline, one step ahead
    assert test["rmse_5_step"] < test["persistence_rmse_5_step"], test
    assert parity["passed"] and (tmp_path / "sunspots" / "forecast.png").is_file()


@pytest.mark.slow
def test_name_generator_beats_the_bigram_baseline(tmp_path):
    metrics, parity = _run("names", tmp_path / "names")
    test = metrics["test"]
    assert test["perplexity"] < test["bigram_perplexity"], test
    assert parity["passed"] and set(parity["graphs"]) == {"step", "init"}
    assert all(metrics["samples"][gender]["greedy"] for gender in ("female", "male"))


@pytest.mark.slow
def test_attention_wins_on_grapheme_to_phoneme(tmp_path):
    with_attention, parity = _run("g2p", tmp_path / "attention")
    without, parity_plain = _run("g2p-no-attention", tmp_path / "plain")
    a, b = with_attention["test"], without["test"]
    assert a["token_error_rate"] < b["token_error_rate"] and a["exact_match"] > b["exact_match"], (a, b)
    assert parity["passed"] and parity_plain["passed"]
    assert parity["tolerance"] == 2e-5 and "float64" in parity["graphs"]["decoder"]["tolerance_reason"]
    assert (tmp_path / "attention" / "attention.png").is_file() and not (tmp_path / "plain" / "attention.png").exists()


# -- the ready-made pipelines on users'-style data: number vectors, entities, transliteration, covariates


@pytest.mark.slow
def test_speakers_are_recognised_from_number_vectors_on_the_published_split(tmp_path):
    metrics, parity = _run("japanese-vowels", tmp_path / "vowels")
    test = metrics["test"]
    assert metrics["data"]["examples"]["test"] == 370  # the published test file, as given
    assert metrics["data"]["examples"]["train"] + metrics["data"]["examples"]["validation"] == 270
    assert test["accuracy"] >= 0.9 and test["accuracy"] >= test["majority_accuracy"] + 0.5, test
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}


@pytest.mark.slow
def test_japanese_entities_beat_the_most_frequent_tag_baseline(tmp_path):
    metrics, parity = _run("ner-japanese", tmp_path / "ner")
    test = metrics["test"]
    assert metrics["training"]["monitor"] == "entity_f1"
    assert test["entity_f1"] >= test["baseline_entity_f1"] + 0.05, test
    assert parity["passed"] and set(parity["graphs"]) == {"sequence"}


@pytest.mark.slow
def test_transliteration_chrf_beats_the_nearest_neighbour_baseline(tmp_path):
    metrics, parity = _run("thai-english", tmp_path / "thai")
    test = metrics["test"]
    assert (
        test["chrf"] >= test["baseline_chrf"] + 10 and test["token_error_rate"] < test["baseline_token_error_rate"]
    ), test
    assert "bleu" not in test  # one-word targets: BLEU's 4-grams do not exist
    assert parity["passed"] and set(parity["graphs"]) == {"encoder", "decoder"}


@pytest.mark.slow
def test_wind_forecast_with_covariates_is_10_percent_below_persistence(tmp_path):
    metrics, parity = _run("seattle-wind", tmp_path / "wind")
    test = metrics["test"]
    assert test["rmse"] <= 0.9 * test["persistence_rmse"] and test["rmse_3_step"] < test["persistence_rmse_3_step"], (
        test
    )
    assert parity["passed"] and (tmp_path / "wind" / "forecast.png").is_file()


@pytest.mark.slow
def test_streaming_character_spam_classifier_meets_its_bar(tmp_path):
    """spam.toml (character GRU, step + sequence graphs): measured 0.8591-0.8662 as shipped on
    machines of this kind and 0.852-0.869 over seeds; a different CPU's rounding changes a
    trajectory, hence the margin."""
    metrics, parity = _run("spam", tmp_path / "spam")
    test = metrics["test"]
    assert test["macro_f1"] >= 0.84 and test["examples"] == 861, test
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5
    assert set(parity["graphs"]) == {"step", "sequence"}
