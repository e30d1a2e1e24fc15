"""Users' own data: CSV, TSV, JSONL, and one-line errors for every way a file can be wrong."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from seqpipe.cli import main
from seqpipe.data import read_records, split_three
from seqpipe.encoding import CharVocabulary
from seqpipe.errors import DataError

ROWS = [{"text": f"subject number {i}", "label": "spam" if i % 3 == 0 else "ham"} for i in range(30)]


def write(path, fmt):
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    else:
        sep = "\t" if fmt == "tsv" else ","
        path.write_text(
            "text" + sep + "label\n" + "".join(f"{r['text']}{sep}{r['label']}\n" for r in ROWS), encoding="utf-8"
        )
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_formats_read_the_same(tmp_path, fmt):
    rows = read_records(write(tmp_path / f"d.{fmt}", fmt), fmt, ["text", "label"], "p.toml")
    assert [(r["text"], r["label"]) for r in rows] == [(r["text"], r["label"]) for r in ROWS]


@pytest.mark.parametrize(
    "content,fmt,fragment",
    [
        ("text,lbl\nhello,ham\n", "csv", "no column 'label' (found: text, lbl)"),
        ("text,label\n", "csv", "holds no records"),
        ("text,label\nhello,\n", "csv", ":2: empty 'label'"),
        ('{"text": "a", "label": "ham"}\n{oops\n', "jsonl", ":2: not valid JSON"),
        ('["a", "ham"]\n', "jsonl", "expected a JSON object per line"),
    ],
)
def test_bad_files_name_file_and_fault(tmp_path, content, fmt, fragment):
    path = tmp_path / f"d.{fmt}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=None) as info:
        read_records(path, fmt, ["text", "label"], "p.toml")
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_not_utf8_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n\xff\xfe,ham\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_records(path, "csv", ["text", "label"], "p.toml")


def test_bad_data_through_the_cli_is_one_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("body,label\nhello,ham\n", encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[data]\npath = "d.csv"\n')
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {data}: no column 'text' (found: body, label); rename the column, or name it in the pipeline file "
        "(input.column, or the task option)."
    ]


def test_unknown_extension_asks_for_format(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[data]\npath = "d.txt"\n')
    result = CliRunner().invoke(main, ["check", str(pipeline)])
    assert result.exit_code == 2 and "set data.format" in result.output


def test_label_outside_declared_labels(tmp_path):
    write(tmp_path / "d.csv", "csv")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[data]\npath = "d.csv"\n[task.options]\nlabels = ["ham"]\n')
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "label(s) 'spam' not in task.options.labels" in result.output


def test_split_is_stratified_disjoint_and_seeded():
    items = [(i, i % 4 == 0) for i in range(200)]
    a = split_three(items, 0.1, 0.2, seed=3, key=lambda x: x[1])
    b = split_three(items, 0.1, 0.2, seed=3, key=lambda x: x[1])
    assert a == b
    train, val, test = a
    assert sorted(train + val + test) == sorted(items)
    assert sum(x[1] for x in test) == 10 and len(test) == 40  # 20% of each class


def test_vocabulary_round_trips_through_spec():
    v = CharVocabulary.fit(["abc", "abd", "zz"], lowercase=True, max_length=3, min_count=2)
    assert v.symbols[:2] == ("<pad>", "<unk>") and "c" not in v.symbols
    assert v.encode("ABCZZ") == [v.symbols.index("a"), v.symbols.index("b"), 1]
    assert CharVocabulary.from_spec(json.loads(json.dumps(v.to_spec()))) == v
