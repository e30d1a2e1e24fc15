"""No silent data loss or corruption: every fault a user's file can have is refused at `seqpipe check`
with its file, line and column, or read without loss; whatever is skipped or cut short is counted.

Also the published-splits keys (`[data] train/validation/test`) and the choice of early-stopping
monitor, which `check` validates against what the task reports on the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.cli import main
from seqpipe.data import DataAccount, read_conll

SENTENCES = [[("Denver", "B-LOC"), ("is", "O"), ("cold", "O")], [("Ann", "B-PER"), ("Lee", "I-PER"), ("sings", "O")],
             [("#Denver", "B-LOC")], [("we", "O"), ("love", "O"), ("#Paris", "B-LOC"), ("!", "O")]] * 10


def conll(path: Path, sentences=SENTENCES, head: str = "") -> Path:
    path.write_text(head + "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    return path


def pipeline(path: Path, data: str, task: str = "classify", options: str = "", inputs: str | None = None) -> Path:
    """A small pipeline file; ``inputs`` is the body of its [input] table (None: no table)."""
    table = f"[input]\n{inputs}\n" if inputs is not None else ""
    path.write_text(f'[data]\n{data}\n{table}[model]\nhidden_size = 8\n[task]\nname = "{task}"\n[task.options]\n{options}\n'
                    '[training]\nepochs = 1\n', encoding="utf-8")
    return path


def check(pipeline_path: Path):
    return CliRunner().invoke(main, ["check", str(pipeline_path)])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# -- read without loss ---------------------------------------------------------------------------

def test_hashtag_tokens_and_one_token_sentences_are_data(tmp_path):
    account = DataAccount()
    sentences = read_conll(conll(tmp_path / "d.conll", head="-DOCSTART-\tO\n\n"), "p.toml", account=account)
    assert sentences == SENTENCES  # '#Denver' alone is a sentence; '#Paris' a token
    assert account.counts == {"docstart_lines": 1}


def test_an_explicit_comment_prefix_is_skipped_and_counted(tmp_path):
    account = DataAccount()
    path = conll(tmp_path / "d.conll", head="# sent_id = 1\n")
    assert read_conll(path, "p.toml", comment_prefix="# ", account=account) == SENTENCES
    assert account.counts == {"comment_lines": 1} and "comment lines" in account.lines()[0]


def test_space_separated_conll_reads_like_tab_separated(tmp_path):
    spaced = tmp_path / "d.conll"
    spaced.write_text("Ann NNP B-PER\nsings VBZ O\n", encoding="utf-8")
    assert read_conll(spaced, "p.toml") == [[("Ann", "B-PER"), ("sings", "O")]]


def test_check_reports_what_run_will_cut_short(tmp_path):
    conll(tmp_path / "d.conll")
    result = CliRunner().invoke(main, ["check", str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag", inputs="max_length = 3"))])
    assert result.exit_code == 0, result.output
    assert "data: 10 sequences cut to input.max_length = 3 steps (raise it to keep them whole)" in result.output
    assert "data: 10 steps past input.max_length, neither trained on nor scored" in result.output
    assert "monitor: validation entity_f1 (max)" in result.output


# -- refused, naming file, line and column ------------------------------------------------------------

def test_numbers_in_a_text_column_are_refused_not_learnt_as_characters(tmp_path):
    rows = [{"text": [[0.1, 0.2], [0.3, 0.4]], "label": "walk"}, {"text": [[1.0, 2.0]], "label": "run"}] * 10
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.jsonl"')))
    assert f"{data}:1: column 'text' holds a list, not text" in line


def test_a_csv_column_of_numbers_is_refused_as_text(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f'"[{i}.5, 2]",{"ab"[i % 2]}\n' for i in range(20)), encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.csv"')))
    assert f"{data}:2: column 'text' holds numbers in every record" in line


def test_text_in_a_numeric_column_names_the_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("value\n" + "".join(f"{i}.0\n" for i in range(40)) + "n/a\n" + "".join(f"{i}.0\n" for i in range(40)),
                    encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.csv"', "forecast", "window = 4")))
    assert f"{data}:42: column 'value' holds 'n/a', not a number" in line


def test_a_missing_column_is_found_by_check(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("body,label\nhello,a\nbye,b\n", encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.csv"')))
    assert f"{data}: no column 'text' (found: body, label)" in line


def test_an_empty_sequence_names_its_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhello,a\n,b\nbye,a\n", encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.csv"')))
    assert f"{data}:3: empty 'text'" in line


@pytest.mark.parametrize("name,content,fault", [
    ("d.csv", "text,label\nhello,a\nbad,row,here\nbye,b\n", ":3: 3 fields where the header names 2"),
    ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label"\n{"text": "c", "label": "y"}\n', ":2: not valid JSON"),
    ("d.conll", "Ann\tB-PER\nsings\tO\n\nBob\n\nLee\tB-PER\n", ":4: expected 'token<TAB>tag'"),
])
def test_a_bad_line_in_the_middle_of_a_file_is_named(tmp_path, name, content, fault):
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    task = "tag" if name.endswith(".conll") else "classify"
    line = one_line_error(check(pipeline(tmp_path / "p.toml", f'path = "{name}"', task)))
    assert f"{data}{fault}" in line


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["#a", "b", "#", "-", "c#", "##x"]), min_size=1, max_size=5), min_size=1, max_size=8))
def test_every_token_written_is_read_back(tmp_path_factory, words):
    """Whatever the tokens look like (hashtags, a lone '#'), every sentence and token comes back."""
    sentences = [[(w, "O") for w in s] for s in words]
    path = conll(tmp_path_factory.mktemp("conll") / "d.conll", sentences)
    assert read_conll(path, "p.toml") == sentences


# -- published splits ----------------------------------------------------------------------------

def test_given_train_and_test_files_are_used_as_published(tmp_path):
    rows = [f"text{i},{'ab'[i % 2]}\n" for i in range(40)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(rows[:30]), encoding="utf-8")
    (tmp_path / "test.csv").write_text("text,label\n" + "".join(rows[30:]), encoding="utf-8")
    result = check(pipeline(tmp_path / "p.toml", 'train = "train.csv"\ntest = "test.csv"\nvalidation_fraction = 0.2'))
    assert result.exit_code == 0, result.output
    assert "data: train 24, validation 6, test 10 examples" in result.output


def test_validation_without_train_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,b\n", encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.csv"\nvalidation = "d.csv"')))
    assert "'validation' and 'test' files go with 'train'" in line


# -- monitors ------------------------------------------------------------------------------------

def test_an_unknown_monitor_is_refused_with_the_choices(tmp_path):
    conll(tmp_path / "d.conll")
    line = one_line_error(check(_with_monitor(tmp_path, "entity_f2", "d.conll")))
    assert "training.monitor: task 'tag' reports no validation metric 'entity_f2' (did you mean 'entity_f1'?)" in line


def test_entity_metrics_on_tags_that_mark_no_entities_are_refused(tmp_path):
    conll(tmp_path / "d.conll", [[("the", "DT"), ("dog", "NN")], [("runs", "VBZ")]] * 20)
    line = one_line_error(check(_with_monitor(tmp_path, "entity_f1", "d.conll")))
    assert "training.monitor: task 'tag' reports no 'entity_f1' on this data" in line


def _with_monitor(tmp_path: Path, monitor: str, data: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'[data]\npath = "{data}"\n[model]\nhidden_size = 8\n[task]\nname = "tag"\n'
                    f'[training]\nepochs = 1\nmonitor = "{monitor}"\n', encoding="utf-8")
    return path


# -- metrics that fit the task ----------------------------------------------------------------------

def test_a_tagger_on_entity_tags_stops_on_entity_f1_and_reports_the_baselines(tmp_path):
    conll(tmp_path / "d.conll")
    result = CliRunner().invoke(main, ["run", str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag", "embedding_size = 4")),
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["training"]["monitor"] == "entity_f1" and "entity_f1" in metrics["training"]["history"][0]["validation"]
    test = metrics["test"]
    # every test sentence also occurs in training, so the most-frequent-tag baseline finds every entity
    assert test["baseline_entity_f1"] == 1.0 and test["baseline_accuracy"] == 1.0
    assert 0.0 <= test["entity_precision"] <= 1.0 and 0.0 <= test["entity_recall"] <= 1.0
    assert metrics["data"]["examples"] == {"train": 28, "validation": 4, "test": 8} and metrics["data"]["left_out"] == {}


def test_classify_reports_the_majority_class_baseline(tmp_path, small_csv, write_pipeline):
    result = CliRunner().invoke(main, ["run", str(write_pipeline(tmp_path / "p.toml", small_csv)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    labels = [line.rsplit(",", 1)[1] for line in small_csv.read_text(encoding="utf-8").splitlines()[1:]]
    share = max(labels.count(label) for label in set(labels)) / len(labels)
    assert abs(test["majority_accuracy"] - share) < 0.05  # stratified split: the test share is the file's share
    assert test["majority_macro_f1"] < 0.5 < test["majority_accuracy"]


def test_entity_schemes_are_recognised_and_bmes_is_scored_like_iobes():
    from seqpipe.builtin.tag import entity_scheme

    assert entity_scheme(["O", "B-PER", "I-PER"]) == "IOB2"
    assert entity_scheme(["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]) == "IOBES"
    assert entity_scheme(["O", "B-LOC", "M-LOC", "E-LOC", "S-PER"]) == "BMES"
    assert entity_scheme(["NOUN", "VERB", "."]) is None and entity_scheme(["NN-TL", "VB-HL", "O"]) is None


def test_a_bmes_tagger_monitors_entity_f1(tmp_path):
    sentences = [[("北", "B-LOC"), ("京", "M-LOC"), ("市", "E-LOC"), ("好", "O")], [("张", "S-PER"), ("来", "O")]] * 20
    conll(tmp_path / "d.conll", sentences)
    result = CliRunner().invoke(main, ["check", str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag"))])
    assert result.exit_code == 0 and "monitor: validation entity_f1 (max)" in result.output, result.output
