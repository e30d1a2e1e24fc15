"""No silent data loss or corruption: every fault a user's file can have is refused at `seqpipe check`
with its file, line and column, or read without loss; whatever is skipped or cut short is counted.

Also the published-splits keys (`[data] train/validation/test`) and the choice of early-stopping
monitor, which `check` validates against what the task reports on the data."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.cli import main
from seqpipe.data import DataAccount, LabelSpellings, read_conll, read_records
from seqpipe.errors import DataError

SENTENCES = [
    [("Denver", "B-LOC"), ("is", "O"), ("cold", "O")],
    [("Ann", "B-PER"), ("Lee", "I-PER"), ("sings", "O")],
    [("#Denver", "B-LOC")],
    [("we", "O"), ("love", "O"), ("#Paris", "B-LOC"), ("!", "O")],
] * 10


def conll(path: Path, sentences=SENTENCES, head: str = "") -> Path:
    path.write_text(
        head + "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8"
    )
    return path


def pipeline(path: Path, data: str, task: str = "classify", options: str = "", inputs: str | None = None) -> Path:
    """A small pipeline file; ``inputs`` is the body of its [input] table (None: no table)."""
    table = f"[input]\n{inputs}\n" if inputs is not None else ""
    path.write_text(
        f'[data]\n{data}\n{table}[model]\nhidden_size = 8\n[task]\nname = "{task}"\n[task.options]\n{options}\n'
        "[training]\nepochs = 1\n",
        encoding="utf-8",
    )
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
    result = CliRunner().invoke(
        main, ["check", str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag", inputs="max_length = 3"))]
    )
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
    data.write_text(
        "value\n" + "".join(f"{i}.0\n" for i in range(40)) + "n/a\n" + "".join(f"{i}.0\n" for i in range(40)),
        encoding="utf-8",
    )
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


@pytest.mark.parametrize(
    "name,content,fault",
    [
        ("d.csv", "text,label\nhello,a\nbad,row,here\nbye,b\n", ":3: 3 fields where the header names 2"),
        (
            "d.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", "label"\n{"text": "c", "label": "y"}\n',
            ":2: not valid JSON",
        ),
        ("d.conll", "Ann\tB-PER\nsings\tO\n\nBob\n\nLee\tB-PER\n", ":4: expected 'token<TAB>tag'"),
    ],
)
def test_a_bad_line_in_the_middle_of_a_file_is_named(tmp_path, name, content, fault):
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    task = "tag" if name.endswith(".conll") else "classify"
    line = one_line_error(check(pipeline(tmp_path / "p.toml", f'path = "{name}"', task)))
    assert f"{data}{fault}" in line


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["#a", "b", "#", "-", "c#", "##x"]), min_size=1, max_size=5), min_size=1, max_size=8
    )
)
def test_every_token_written_is_read_back(tmp_path_factory, words):
    """Whatever the tokens look like (hashtags, a lone '#'), every sentence and token comes back."""
    sentences = [[(w, "O") for w in s] for s in words]
    path = conll(tmp_path_factory.mktemp("conll") / "d.conll", sentences)
    assert read_conll(path, "p.toml") == sentences


# -- the readers: one-line refusals, or read without loss -------------------------------------------


def table(labels, head: str = "text,label", sep: str = ",") -> bytes:
    """A CSV (or TSV) file: the header, then one text per label, 'text0', 'text1', ..."""
    return (head + "\n" + "".join(f"text{i}{sep}{label}\n" for i, label in enumerate(labels))).encode()


LABELS = ["ham", "spam"] * 10  # on lines 2 to 21: 'ham' first on line 2, 'spam' on line 3
TAGGED = "Ann\tB-PER\nsings\tO\n\nBob\tB-PER\nruns\tO\n\n" * 10  # 'B-PER' first on line 1, 'O' on line 2
CHECKS = [  # (file name, its bytes, the task, the fault as `seqpipe check` says it after 'error: {path}')
    (
        "d.csv",
        table(LABELS, "text,label,text"),
        "classify",
        ":1: column 'text' appears twice in the header (columns 1 and 3); rename one.",
    ),
    (
        "d.tsv",
        table(LABELS, "label\ttext\tlabel", "\t"),
        "classify",
        ":1: column 'label' appears twice in the header (columns 1 and 3); rename one.",
    ),
    (
        "d.csv",
        table(LABELS, ",text,label,"),
        "classify",
        ":1: two columns have no name in the header (columns 1 and 4); name them.",
    ),
    (
        "d.csv",
        table(LABELS[:2]) + b"caf\xe9,ham\n" + table(LABELS[2:], ""),
        "classify",
        ":4: not UTF-8 text (byte 0xe9 at column 4 of the line, offset 35 in the file); re-save the file as UTF-8.",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "ham"}\n{"text": "\xff", "label": "spam"}\n',
        "classify",
        ":2: not UTF-8 text (byte 0xff at column 11 of the line, offset 40 in the file); re-save the file as UTF-8.",
    ),
    (
        "d.conll",
        b"\xef\xbb\xbfAnn\tB-PER\nsi\xc3ngs\tO\n",
        "tag",
        ":2: not UTF-8 text (byte 0xc3 at column 3 of the line, offset 15 in the file); re-save the file as UTF-8.",
    ),
    (
        "d.csv",
        "text,label\nhello,ham\n".encode("utf-16"),
        "classify",
        ":1: not UTF-8 text but UTF-16 (it starts with the byte-order mark 0xff 0xfe); re-save the file as UTF-8.",
    ),
    (
        "d.csv",
        table(LABELS) + b'bye,"ham\n' + table(LABELS, ""),
        "classify",
        ":22: a quote opened here is never closed (the rest of the file would be read into one value); close it or "
        "remove the stray '\"'.",
    ),
    (
        "d.tsv",
        table(LABELS, "text\tlabel", "\t") + b'"bye\tham\n' + table(LABELS * 2000, "", "\t"),
        "classify",  # past csv's field limit
        ":22: a quote opened here is never closed (the rest of the file would be read into one value); close it or "
        "remove the stray '\"'.",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "ham", "text": "b"}\n',
        "classify",
        ":1: key 'text' appears twice in this object (JSON would keep only the last); remove one.",
    ),
    (
        "d.csv",
        table(LABELS + [" ham"]),
        "classify",
        ":22: label ' ham' differs from 'ham' (line 2) only by surrounding spaces; fix the "
        "spelling, or set data.strip_labels = true to strip spaces around labels (counted in the run log).",
    ),
    (
        "d.csv",
        table(LABELS + ["Spam "]),
        "classify",
        ":22: label 'Spam ' differs from 'spam' (line 3) only by surrounding spaces and case;",
    ),
    (
        "d.csv",
        table(LABELS + ["eggs "]),
        "classify",
        ":22: label 'eggs ' has spaces around it; fix the spelling, or set data.strip_labels",
    ),
    (
        "d.csv",
        table(["Ham"] + LABELS),
        "classify",
        ":2: label 'Ham' differs from 'ham' (line 3) only by case; fix the spelling (labels are told apart exactly).",
    ),
    (
        "d.conll",
        (TAGGED + "Lee\tb-per\n").encode(),
        "tag",
        ":61: tag 'b-per' differs from 'B-PER' (line 1) only by case;",
    ),
    (
        "d.conll",
        ("token\ttag\n" + TAGGED).encode(),
        "tag",
        ":1: 'token\\ttag' looks like a header line; CoNLL files have none: remove it.",
    ),
    (
        "d.conll",
        ("\ufeffWORD  POS\n\n" + TAGGED).encode(),
        "tag",
        ":1: 'WORD  POS' looks like a header line; CoNLL files have none",
    ),
    (
        "d.csv",
        table(LABELS, "text, label"),
        "classify",
        ": no column 'label' (found: text,  label; ' label' differs from it only by spaces or case); rename the column",
    ),
]


@pytest.mark.parametrize("name,content,task,fault", CHECKS)
def test_check_refuses_a_faulty_file_in_one_line_naming_file_and_line(tmp_path, name, content, task, fault):
    data = tmp_path / name
    data.write_bytes(content)
    assert f"error: {data}{fault}" in one_line_error(check(pipeline(tmp_path / "p.toml", f'path = "{name}"', task)))


def test_a_label_only_outside_training_names_the_line_of_its_first_example(tmp_path):
    (tmp_path / "train.csv").write_bytes(table(LABELS))
    (tmp_path / "val.csv").write_bytes(table(["ham", "spam", "eggs", "bacon", "eggs"]))
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'train = "train.csv"\nvalidation = "val.csv"')))
    assert (
        f"error: {tmp_path / 'val.csv'}:4: label(s) 'bacon', 'eggs' occur only outside the training split (the first "
        "example "
        "is on this line);" in line
    )


def test_a_tag_only_outside_training_names_the_line_of_its_first_sentence(tmp_path):
    (tmp_path / "train.conll").write_text(TAGGED, encoding="utf-8")
    (tmp_path / "test.conll").write_text("Ann\tB-PER\n\nin\tO\nParis\tB-LOC\n", encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'train = "train.conll"\ntest = "test.conll"', "tag")))
    assert f"error: {tmp_path / 'test.conll'}:4: tag(s) 'B-LOC' occur only outside the training split" in line


def test_strip_labels_strips_spaces_around_labels_and_says_how_many(tmp_path):
    (tmp_path / "d.csv").write_bytes(table([" ham", "spam "] * 10))
    result = check(pipeline(tmp_path / "p.toml", 'path = "d.csv"\nstrip_labels = true'))
    assert result.exit_code == 0, result.output
    assert "data: 20 labels with spaces around them stripped (data.strip_labels) in d.csv" in result.output


@pytest.mark.parametrize(
    "name,content",
    [
        ("d.csv", "\ufefftext,label\nhello,ham\n"),
        ("d.tsv", "\ufefftext\tlabel\nhello\tham\n"),
        ("d.jsonl", '\ufeff{"text": "hello", "label": "ham"}\n'),
    ],
)
def test_a_byte_order_mark_is_stripped_and_counted(tmp_path, name, content):
    account = DataAccount()
    (tmp_path / name).write_text(content, encoding="utf-8")
    rows = read_records(tmp_path / name, name[2:], ["text", "label"], "p.toml", account=account)
    assert rows == [{"text": "hello", "label": "ham"}] and rows[0].line == 1 + (name != "d.jsonl")
    assert account.lines() == [f"1 byte-order mark stripped from the start of {name}"]


def test_a_byte_order_mark_never_sticks_to_the_first_token(tmp_path):
    account = DataAccount()
    assert read_conll(conll(tmp_path / "d.conll", head="\ufeff"), "p.toml", account=account) == SENTENCES
    assert account.counts == {"byte_order_marks": 1}


def test_the_account_names_every_file_a_count_comes_from(tmp_path):
    account = DataAccount()
    for name in ("train.conll", "test.conll"):
        read_conll(conll(tmp_path / name, head="\ufeff-DOCSTART-\tO\n\n"), "p.toml", account=account)
    assert account.lines() == [
        "2 byte-order mark stripped from the start of train.conll, test.conll",
        "2 '-DOCSTART-' document separator lines skipped in train.conll, test.conll",
    ]


def test_quoted_line_breaks_and_crlf_read_as_before_with_the_lines_they_start_on(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\r\n"two\r\nlines",ham\r\nplain,spam\r\n\r\n"say ""hi""",ham\r\n"a,b",""""\r\n')
    rows = read_records(path, "csv", ["text", "label"], "p.toml")
    assert [(r["text"], r["label"], r.line) for r in rows] == [
        ("two\r\nlines", "ham", 2),
        ("plain", "spam", 4),
        ('say "hi"', "ham", 6),
        ("a,b", '"', 7),
    ]


@pytest.mark.parametrize(
    "content,spaced,breaks",
    [
        ("Ann\tB-PER\n \t\nsings\tO\n", 0, 1),  # a line of a space and a tab alone parts two sentences
        ("Ann\tB-PER\n  \n\nsings\tO\n", 0, 0),  # beside an empty line it changes nothing
        (" \nAnn\tB-PER\n\nsings\tO\n  \n", 0, 0),  # before the first sentence and after the last, neither
        ("Ann \tB-PER\n\nsings\t O \n", 2, 0),
    ],
)
def test_conll_spaces_are_stripped_around_fields_and_counted(tmp_path, content, spaced, breaks):
    account = DataAccount()
    path = tmp_path / "d.conll"
    path.write_text(content, encoding="utf-8")
    sentences = read_conll(path, "p.toml", account=account)
    assert (
        sentences == [[("Ann", "B-PER")], [("sings", "O")]]
        and sentences[1].line == content.count("\n", 0, content.index("sings")) + 1
    )
    assert account.counts == {key: n for key, n in (("space_only_lines", breaks), ("spaced_fields", spaced)) if n}
    assert all(f" in {path.name}" in line for line in account.lines())


def test_stripped_tags_are_counted_and_a_tag_of_only_spaces_refused():
    account = DataAccount()
    spellings = LabelSpellings("tag", strip=True, account=account)
    assert spellings.read([" B-PER", "O", "O\t"], Path("d.jsonl"), [1, 1, 2]) == ["B-PER", "O", "O"]
    assert account.lines() == ["2 tags with spaces around them stripped (data.strip_labels) in d.jsonl"]
    with pytest.raises(DataError, match=r"^d.jsonl:7: the tag is only spaces; fill it in or remove the record.$"):
        spellings.read(["O", "  "], Path("d.jsonl"), [6, 7])


# -- property tests: what a writer writes, the readers read back exactly, or refuse in one line ------

NAMES = st.lists(st.text("abcdefghij_", min_size=1, max_size=6), min_size=1, max_size=4, unique=True)
CELLS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


def read_or_refuse(read, expected_empty: bool):
    """``read()``'s result, or None where it refuses empty values in one line (only when some are empty)."""
    try:
        return read()
    except DataError as exc:
        assert expected_empty and "\n" not in str(exc) and ": empty '" in str(exc), exc
        return None


@settings(max_examples=50, deadline=None)
@given(
    NAMES.flatmap(
        lambda names: st.tuples(
            st.just(names), st.lists(st.lists(CELLS, min_size=len(names), max_size=len(names)), min_size=1, max_size=6)
        )
    ),
    st.sampled_from(["csv", "tsv"]),
    st.booleans(),
)
def test_any_table_csv_writes_is_read_back_exactly(tmp_path_factory, written, fmt, bom):
    names, rows = written
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",")
    writer.writerow(names)
    lines = []
    for row in rows:  # each record starts on the line after the line breaks written so far
        lines.append(len(re.findall(r"\r\n|\r|\n", out.getvalue())) + 1)
        writer.writerow(row)
    path = tmp_path_factory.mktemp("table") / f"d.{fmt}"
    path.write_text(("\ufeff" if bom else "") + out.getvalue(), encoding="utf-8", newline="")
    read = read_or_refuse(lambda: read_records(path, fmt, names, "p.toml"), any("" in row for row in rows))
    if read is not None:
        assert [dict(r) for r in read] == [dict(zip(names, row)) for row in rows] and [r.line for r in read] == lines


@settings(max_examples=50, deadline=None)
@given(
    NAMES.flatmap(lambda names: st.lists(st.fixed_dictionaries({n: CELLS for n in names}), min_size=1, max_size=6)),
    st.booleans(),
)
def test_any_json_lines_are_read_back_exactly(tmp_path_factory, rows, ascii_only):
    path = tmp_path_factory.mktemp("jsonl") / "d.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=ascii_only) + "\n" for row in rows), encoding="utf-8")
    read = read_or_refuse(
        lambda: read_records(path, "jsonl", list(rows[0]), "p.toml"), any("" in row.values() for row in rows)
    )
    if read is not None:
        assert read == rows and [r.line for r in read] == list(range(1, len(rows) + 1))


WORDS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=6,
)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(WORDS, WORDS, st.sampled_from(["", " ", "  "])), min_size=1, max_size=5),
        min_size=1,
        max_size=6,
    )
)
def test_any_tokens_and_tags_are_read_back_exactly_spaces_around_them_stripped(tmp_path_factory, sentences):
    path = tmp_path_factory.mktemp("conll") / "d.conll"
    path.write_text(
        "\n\n".join("\n".join(f"{w}{pad}\t{pad}{t}" for w, t, pad in s) for s in sentences) + "\n", encoding="utf-8"
    )
    account = DataAccount()
    try:
        read = read_conll(path, "p.toml", account=account)
    except DataError as exc:  # only a first line that reads as a header, such as 'Word<TAB>Tag'
        assert "looks like a header line" in str(exc) and "\n" not in str(exc)
        return
    assert read == [[(w, t) for w, t, _ in s] for s in sentences]
    assert account.counts.get("spaced_fields", 0) == sum(bool(pad) for s in sentences for *_, pad in s)
    assert sum(len(s) for s in read) == len({line for s in read for line in s.lines})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["ham", "spam", "Ham", " ham", "ham ", "eggs", "EGGS"]), min_size=1, max_size=8))
def test_labels_twins_by_case_or_spaces_are_refused_and_only_they(labels):
    spellings = LabelSpellings("label")
    spellings.read(labels, Path("d.csv"), list(range(2, len(labels) + 2)))
    odd = any(label != label.strip() for label in labels) or len({label.casefold() for label in labels}) < len(
        set(labels)
    )
    try:
        spellings.check()
        assert not odd
    except DataError as exc:
        assert odd and str(exc).startswith("d.csv:") and "\n" not in str(exc)


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
    path.write_text(
        f'[data]\npath = "{data}"\n[model]\nhidden_size = 8\n[task]\nname = "tag"\n'
        f'[training]\nepochs = 1\nmonitor = "{monitor}"\n',
        encoding="utf-8",
    )
    return path


# -- metrics that fit the task ----------------------------------------------------------------------


def test_a_tagger_on_entity_tags_stops_on_entity_f1_and_reports_the_baselines(tmp_path):
    conll(tmp_path / "d.conll")
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag", "embedding_size = 4")),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (
        metrics["training"]["monitor"] == "entity_f1" and "entity_f1" in metrics["training"]["history"][0]["validation"]
    )
    test = metrics["test"]
    # every test sentence also occurs in training, so the most-frequent-tag baseline finds every entity
    assert test["baseline_entity_f1"] == 1.0 and test["baseline_accuracy"] == 1.0
    assert 0.0 <= test["entity_precision"] <= 1.0 and 0.0 <= test["entity_recall"] <= 1.0
    assert (
        metrics["data"]["examples"] == {"train": 28, "validation": 4, "test": 8} and metrics["data"]["left_out"] == {}
    )


def test_classify_reports_the_majority_class_baseline(tmp_path, small_csv, write_pipeline):
    result = CliRunner().invoke(
        main, ["run", str(write_pipeline(tmp_path / "p.toml", small_csv)), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    labels = [line.rsplit(",", 1)[1] for line in small_csv.read_text(encoding="utf-8").splitlines()[1:]]
    share = max(labels.count(label) for label in set(labels)) / len(labels)
    assert abs(test["majority_accuracy"] - share) < 0.05  # stratified split: the test share is the file's share
    assert test["majority_macro_f1"] < 0.5 < test["majority_accuracy"]


def test_entity_schemes_are_recognised_and_bmes_is_scored_like_iobes():
    from seqpipe.builtin.tag.task import entity_scheme

    assert entity_scheme(["O", "B-PER", "I-PER"]) == "IOB2"
    assert entity_scheme(["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]) == "IOBES"
    assert entity_scheme(["O", "B-LOC", "M-LOC", "E-LOC", "S-PER"]) == "BMES"
    assert entity_scheme(["NOUN", "VERB", "."]) is None and entity_scheme(["NN-TL", "VB-HL", "O"]) is None


def test_a_bmes_tagger_monitors_entity_f1(tmp_path):
    sentences = [[("北", "B-LOC"), ("京", "M-LOC"), ("市", "E-LOC"), ("好", "O")], [("张", "S-PER"), ("来", "O")]] * 20
    conll(tmp_path / "d.conll", sentences)
    result = CliRunner().invoke(main, ["check", str(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag"))])
    assert result.exit_code == 0 and "monitor: validation entity_f1 (max)" in result.output, result.output
