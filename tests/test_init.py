"""`seqpipe init`: a first pipeline file from a data file, its guesses said and checkable, for
every bundled data file and for the shapes users bring (token lists, number vectors, dated series)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from seqpipe.cli import main

DATASETS = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets"
BUNDLED = sorted(p for p in DATASETS.glob("*/*") if p.suffix in (".csv", ".tsv", ".jsonl", ".conll"))
EXPECTED_TASK = {
    "brown-universal": "tag",
    "ner": "tag",
    "cmudict-12k": "seq2seq",
    "th-en-transliteration": "seq2seq",
    "subjects": "classify",
    "first_names": "classify",
    "train": "classify",
    "test": "classify",
    "sunspots": "forecast",
    "seattle-weather": "forecast",
}


def _init(tmp_path: Path, data: Path, *args: str):
    out = tmp_path / "pipeline.toml"
    result = CliRunner().invoke(main, ["init", str(data), "--out", str(out), *args])
    return result, out


@pytest.mark.parametrize("data", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_data_file_gets_a_pipeline_that_passes_check(tmp_path, data):
    result, out = _init(tmp_path, data)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}; next: seqpipe check {out}" in result.output
    written = tomllib.loads(out.read_text(encoding="utf-8"))
    assert written["task"]["name"] == EXPECTED_TASK[data.stem]
    assert (out.parent / written["data"]["path"]).resolve() == data.resolve()  # relative to the pipeline file
    checked = CliRunner().invoke(main, ["check", str(out)])
    assert checked.exit_code == 0, checked.output
    text = out.read_text(encoding="utf-8")  # values seqpipe fits to the data are not shown as fixed defaults
    assert "# epochs = ...                      # fitted to the training split's size when unset" in text
    assert "# epochs = 20" not in text and "# hidden_size = 128" in text


def test_guesses_for_the_shapes_users_bring(tmp_path):
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(
        "".join(json.dumps({"words": ["a", "b", "c"], "tags": ["X", "Y", "X"]}) + "\n" for _ in range(30))
    )
    result, out = _init(tmp_path, tokens)
    assert result.exit_code == 0, result.output
    written = tomllib.loads(out.read_text())
    assert written["input"] == {"kind": "words", "column": "words"} and written["task"]["options"] == {
        "tag_column": "tags"
    }

    series = tmp_path / "series.csv"
    series.write_text(
        "when,load,temperature\n"
        + "".join(f"2020-{1 + i // 28:02d}-{1 + i % 28:02d},{i % 7},{i % 5}\n" for i in range(84))
    )
    result, out = _init(tmp_path, series, "--force")
    written = tomllib.loads(out.read_text())
    assert written["task"] == {"name": "forecast", "options": {"value_column": "load", "time_column": "when"}}
    assert "other number columns (temperature) can be covariates" in result.output


def test_ids_labels_and_named_columns_are_not_mistaken_for_the_input(tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text(
        "name,review,sentiment\n"
        + "".join(f'item {i},"{"good fine" if i % 2 else "bad awful"} stuff",{"+-"[i % 2]}\n' for i in range(50))
    )
    result, out = _init(tmp_path, reviews)
    written = tomllib.loads(out.read_text())
    assert written["task"]["name"] == "classify" and written["input"]["column"] == "review"
    assert written["task"]["options"] == {"label_column": "sentiment"}
    readings = tmp_path / "readings.csv"
    readings.write_text(
        "id,date,temperature\n" + "".join(f"{i + 1},2020-01-{i + 1:02d},{(i * 7) % 10}.5\n" for i in range(28))
    )
    result, out = _init(tmp_path, readings, "--force")
    assert tomllib.loads(out.read_text())["task"]["options"] == {"value_column": "temperature", "time_column": "date"}


def test_odd_column_names_are_written_as_valid_toml(tmp_path):
    name = 'the "text" \\ col\x7fumn é'
    data = tmp_path / "odd.jsonl"
    data.write_text("".join(json.dumps({name: f"some text {i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    result, out = _init(tmp_path, data)
    assert result.exit_code == 0, result.output
    assert tomllib.loads(out.read_text())["input"]["column"] == name


def test_the_written_file_is_kept_and_a_wrong_task_is_one_line(tmp_path):
    data = DATASETS / "spam_assassin" / "subjects.csv"
    first, out = _init(tmp_path, data)
    out.write_text("# mine\n", encoding="utf-8")
    again, _ = _init(tmp_path, data)
    assert again.exit_code == 2 and "already exists; choose another file with --out, or --force" in again.output
    assert out.read_text() == "# mine\n"
    wrong, _ = _init(tmp_path, data, "--task", "clasify", "--force")
    assert wrong.exit_code == 2 and "clasify" in wrong.output and "classify" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1
    forced, _ = _init(tmp_path, data, "--task", "generate", "--force")
    assert forced.exit_code == 0 and tomllib.loads(out.read_text())["task"]["options"] == {
        "text_column": "text",
        "condition_column": "label",
    }
