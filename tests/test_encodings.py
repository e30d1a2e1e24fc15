"""Input encodings, the fourth plugin kind: characters, words, subwords and numbers, chosen in a
pipeline's [input] table, fitted on the training split, rebuilt from an export's metadata; number
vectors read from JSON Lines or long-format CSV, refused (never coerced) when they do not fit, and
served from ONNX without torch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqpipe.builtin.encodings import (
    Characters,
    CharactersOptions,
    Numbers,
    NumbersOptions,
    Subwords,
    SubwordsOptions,
    Words,
    WordsOptions,
)
from seqpipe.cli import main
from seqpipe.serving.predict import encoding_from_spec
from test_data_faults import check, one_line_error, pipeline

TEXTS = ["the cat sat on the mat", "a dog ran after the cat", "the mat was red", "dogs and cats"]


# -- each encoding, fitted and rebuilt from its metadata ----------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    [
        Characters(CharactersOptions(min_count=1, lowercase=True)),
        Words(WordsOptions(min_count=1)),
        Subwords(SubwordsOptions(vocab_size=60)),
        Subwords(SubwordsOptions(model="unigram", vocab_size=40)),
    ],
    ids=["characters", "words", "subwords-bpe", "subwords-unigram"],
)
def test_text_encodings_rebuild_from_metadata_and_encode_alike(encoding):
    encoding.fit(TEXTS)
    spec = json.loads(json.dumps(encoding.to_spec()))  # what an ONNX file's metadata holds
    rebuilt = encoding_from_spec(spec)
    assert spec["dtype"] == "int64" and spec["kind"] == encoding.kind
    for text in [*TEXTS, "an unseen zebra!"]:
        ids = encoding.encode(text)
        assert ids == rebuilt.encode(text) and all(0 < i < encoding.size for i in ids)
    assert encoding.join(encoding.units("the cat sat")) == "the cat sat"


def test_subword_tokenizer_in_the_metadata_loads_in_any_tokenizers_binding():
    from tokenizers import Tokenizer

    encoding = Subwords(SubwordsOptions(vocab_size=60))
    encoding.fit(TEXTS)
    spec = encoding.to_spec()
    assert Tokenizer.from_str(spec["tokenizer_json"]).encode("the cat").ids == encoding.encode("the cat")
    assert spec["symbols"][spec["pad_id"]] == "<pad>" and spec["unk_id"] == 1


def test_numbers_are_standardised_with_training_statistics_only():
    train = [np.array([[1.0, 10.0], [3.0, 10.0]], np.float32), np.array([[5.0, 10.0]], np.float32)]
    encoding = Numbers(NumbersOptions(column="x"))
    encoding.fit(train)
    assert np.allclose(encoding.mean, [3.0, 10.0]) and np.allclose(
        encoding.std, [np.std([1, 3, 5]), 1.0]
    )  # constant: not divided by 0
    rebuilt = encoding_from_spec(json.loads(json.dumps(encoding.to_spec())))
    later = np.array([[7.0, 12.0]], np.float32)
    assert np.allclose(rebuilt.encode(later), encoding.encode(later)) and rebuilt.encode(later).dtype == np.float32


def test_series_normalization_reads_the_shape_and_survives_the_export():
    """normalize = "series": a sequence shifted and scaled encodes as the original does, in training
    and when rebuilt from the export's metadata; metadata written before the option reads as "none"."""
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(int(rng.integers(3, 9)), 2)) for _ in range(6)]
    encoding = Numbers(NumbersOptions(column="x", normalize="series"))
    encoding.fit(train)
    assert np.allclose(encoding.mean, 0.0) and np.allclose(
        encoding.std, 1.0
    )  # each sequence was rescaled before the statistics
    shape = np.array([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0]])
    rebuilt = encoding_from_spec(json.loads(json.dumps(encoding.to_spec())))
    for moved in (shape * 40.0 - 7.0, shape + 1000.0):
        assert np.allclose(encoding.encode(moved), encoding.encode(shape), atol=1e-5)
        assert np.array_equal(rebuilt.encode(moved), encoding.encode(moved))
    assert np.allclose(encoding.encode(shape)[:, 1], 0.0)  # a constant feature is centred, not divided by zero
    old = {key: value for key, value in encoding.to_spec().items() if key != "normalize"}
    assert encoding_from_spec(old).options.normalize == "none"


# -- the pipeline file ---------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sequences(n: int, seed: int = 0) -> list[dict]:
    """Sequences of 2-feature vectors whose label is the sign of the first feature's mean."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x = rng.normal(size=(int(rng.integers(2, 9)), 2)) + [rng.choice([-1.0, 1.0]), 0.0]
        rows.append({"x": np.round(x, 4).tolist(), "label": "up" if x[:, 0].mean() > 0 else "down"})
    return rows


def test_subwords_are_refused_for_a_tagger_at_check(tmp_path):
    (tmp_path / "d.conll").write_text("a\tO\nb\tO\n", encoding="utf-8")
    line = one_line_error(check(pipeline(tmp_path / "p.toml", 'path = "d.conll"', "tag", inputs='kind = "subwords"')))
    assert "input.kind: task 'tag' gives one label per token" in line


def test_a_ragged_number_vector_is_refused_at_check_with_file_line_and_column(tmp_path):
    rows = _sequences(20)
    rows[6]["x"][1] = [0.5]
    data = _write(tmp_path / "d.jsonl", rows)
    line = one_line_error(
        check(pipeline(tmp_path / "p.toml", 'path = "d.jsonl"', inputs='kind = "numbers"\ncolumn = "x"'))
    )
    assert f"{data}:7: column 'x': step 2 has 1 numbers where step 1 has 2" in line


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("walking", "column 'x' holds text ('walking'), not a list of number vectors"),
        ([], "column 'x' is an empty sequence"),
        ([[1.0, None]], "column 'x': step 1 holds None, not a finite number"),
    ],
)
def test_text_or_an_empty_sequence_in_a_numeric_column_is_refused(tmp_path, value, fragment):
    rows = _sequences(20)
    rows[3]["x"] = value
    data = _write(tmp_path / "d.jsonl", rows)
    line = one_line_error(
        check(pipeline(tmp_path / "p.toml", 'path = "d.jsonl"', inputs='kind = "numbers"\ncolumn = "x"'))
    )
    assert f"{data}:4: {fragment}" in line


def _long_csv(path: Path, rows: list[dict], shuffle: bool = True) -> Path:
    """The same sequences in long format: one row per step, rows in any order."""
    lines = [(f"s{i}", t, *step, row["label"]) for i, row in enumerate(rows) for t, step in enumerate(row["x"])]
    if shuffle:
        random.Random(1).shuffle(lines)
    path.write_text("seq,t,a,b,label\n" + "".join(",".join(map(str, r)) + "\n" for r in lines), encoding="utf-8")
    return path


def test_long_format_csv_reads_the_same_sequences_as_json_lines(tmp_path):
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.plugins import load_registry

    rows = _sequences(30)
    _write(tmp_path / "d.jsonl", rows)
    _long_csv(tmp_path / "d.csv", rows)
    registry, _ = load_registry()
    wide = resolve_pipeline(
        pipeline(tmp_path / "w.toml", 'path = "d.jsonl"', inputs='kind = "numbers"\ncolumn = "x"'), registry
    )
    long = resolve_pipeline(
        pipeline(
            tmp_path / "l.toml",
            'path = "d.csv"\nsequence_column = "seq"\norder_column = "t"',
            inputs='kind = "numbers"\ncolumns = ["a", "b"]',
        ),
        registry,
    )
    (task_w, sizes_w, _), (task_l, sizes_l, _) = wide.prepare(), long.prepare()
    assert sizes_w == sizes_l
    read = lambda task: sorted(np.round(x, 4).tobytes() for split in task.values.values() for x in split)  # noqa: E731
    assert read(task_w) == read(task_l)  # every sequence, each step in order, whichever way it was written


@pytest.mark.parametrize(
    "damage,fragment",
    [
        (lambda text: text.replace("s3,1,", "s3,0,", 1), "sequence 's3' has step 0 twice"),
        (lambda text: text.replace("up\n", "down\n", 1), "column 'label' changes within sequence"),
        (lambda text: text.replace("\ns0,0,", "\ns0,x0,", 1), None),
    ],
)
def test_long_format_faults_name_the_line(tmp_path, damage, fragment):
    data = _long_csv(tmp_path / "d.csv", _sequences(20), shuffle=False)
    data.write_text(damage(data.read_text()), encoding="utf-8")
    result = check(
        pipeline(
            tmp_path / "p.toml",
            'path = "d.csv"\nsequence_column = "seq"\norder_column = "t"',
            inputs='kind = "numbers"\ncolumns = ["a", "b"]',
        )
    )
    if fragment is None:  # an order value that is not a number
        assert f"{data}:2: column 't' holds 'x0', not a number" in one_line_error(result)
    else:
        assert fragment in one_line_error(result) and f"{data}:" in result.output


# -- classify and tag on number vectors, end to end -------------------------------------------------------


@pytest.fixture(scope="module")
def numbers_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numbers")
    _write(root / "d.jsonl", _sequences(400))
    (root / "p.toml").write_text(
        '[data]\npath = "d.jsonl"\n[input]\nkind = "numbers"\ncolumn = "x"\n[model]\nhidden_size = 16\n'
        '[task]\nname = "classify"\n[training]\nepochs = 8\nbatch_size = 32\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["run", str(root / "p.toml"), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.mark.slow
def test_classify_learns_from_number_vectors_and_serves_them_without_torch(numbers_run, torch_blocked_env):
    from conftest import predict_without_torch

    metrics = json.loads((numbers_run / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.9 > metrics["majority_accuracy"] + 0.2
    assert {"summary_accuracy", "nearest_accuracy"} <= set(metrics)  # the classical baselines for number sequences
    spec = json.loads((numbers_run / "parity.json").read_text())
    assert spec["passed"]
    up, down = [[1.2, 0.0], [0.8, 0.3], [1.5, -0.2]], [[-1.1, 0.1], [-0.9, 0.0]]
    served = predict_without_torch(torch_blocked_env, str(numbers_run), json.dumps(up), json.dumps(down))
    assert [r["label"] for r in served] == ["up", "down"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1))
@pytest.mark.slow
def test_number_vector_graphs_agree_on_ragged_batches(numbers_run, lengths, seed):
    """The exported sequence and step graphs, and torch, on drawn ragged batches of float vectors."""
    from conftest import load_trained
    from seqpipe.serving.runtime import SequenceRunner, StepRunner

    _, model = load_trained(numbers_run.parent, run=numbers_run.name)
    lengths_np = np.array(lengths, dtype=np.int64)
    x = np.random.default_rng(seed).normal(size=(len(lengths), max(lengths), 2)).astype(np.float32)
    y_seq, _ = SequenceRunner(numbers_run / "onnx" / "sequence.onnx", device="cpu").run(x, lengths_np)
    _, last, _ = StepRunner(numbers_run / "onnx" / "step.onnx", device="cpu").run_padded(x, lengths_np)
    with torch.no_grad():
        y_torch, _ = model.sequence_output(torch.from_numpy(x), torch.from_numpy(lengths_np))
    assert np.abs(y_seq - y_torch.numpy()).max() <= 1e-5 and np.abs(last - y_seq).max() <= 1e-5


@pytest.mark.slow
def test_tag_labels_each_step_of_a_number_stream_from_long_format_csv(tmp_path, torch_blocked_env):
    """A sensor-like stream with a per-step activity label (high when the first feature is positive)."""
    from conftest import predict_without_torch

    rng = np.random.default_rng(3)
    lines = ["stream,t,a,b,activity"]
    for s in range(120):
        level = rng.normal(size=int(rng.integers(5, 15)))
        lines += [f"{s},{t},{v:.4f},{rng.normal():.4f},{'high' if v > 0 else 'low'}" for t, v in enumerate(level)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        '[data]\npath = "d.csv"\nsequence_column = "stream"\norder_column = "t"\n'
        '[input]\nkind = "numbers"\ncolumns = ["a", "b"]\n[model]\nhidden_size = 16\n'
        '[task]\nname = "tag"\n[task.options]\ntag_column = "activity"\n'
        "[training]\nepochs = 10\nbatch_size = 16\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.9 and metrics["accuracy"] > metrics["baseline_accuracy"] + 0.3
    served = predict_without_torch(torch_blocked_env, str(tmp_path / "run"), "[[2.0, 0.1], [-2.0, 0.3], [1.5, -0.4]]")
    assert served[0]["tags"] == ["high", "low", "high"]


# -- faults found by trying seqpipe on users' data ------------------------------------------------------


def test_non_finite_values_in_long_format_are_refused_at_check(tmp_path):
    data = _long_csv(tmp_path / "d.csv", _sequences(20), shuffle=False)
    lines = data.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:2] + ["nan"] + lines[3].split(",")[3:])
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    line = one_line_error(
        check(
            pipeline(
                tmp_path / "p.toml",
                'path = "d.csv"\nsequence_column = "seq"\norder_column = "t"',
                inputs='kind = "numbers"\ncolumns = ["a", "b"]',
            )
        )
    )
    assert f"{data}:4: column 'a' holds 'nan', not a finite number" in line


def test_a_value_too_large_for_float32_is_refused(tmp_path):
    rows = _sequences(20)
    rows[2]["x"][0][1] = 1e300
    data = _write(tmp_path / "d.jsonl", rows)
    line = one_line_error(
        check(pipeline(tmp_path / "p.toml", 'path = "d.jsonl"', inputs='kind = "numbers"\ncolumn = "x"'))
    )
    assert f"{data}:3: column 'x': step 1 holds 1e+300, not a finite number (float32" in line


def test_a_width_that_changes_between_files_names_both_places(tmp_path):
    _write(tmp_path / "train.jsonl", _sequences(30))
    test = _sequences(10, seed=1)
    test[4]["x"] = [[0.5], [0.2]]
    data = _write(tmp_path / "test.jsonl", test)
    line = one_line_error(
        check(
            pipeline(
                tmp_path / "p.toml",
                'train = "train.jsonl"\ntest = "test.jsonl"',
                inputs='kind = "numbers"\ncolumn = "x"',
            )
        )
    )
    assert f"{data}:5: 1 numbers per step where {tmp_path / 'train.jsonl'}:1 has 2" in line


def test_a_label_found_only_outside_the_training_split_is_refused(tmp_path):
    _write(tmp_path / "train.jsonl", _sequences(30))
    test = _sequences(10, seed=1)
    test[0]["label"] = "upp"
    _write(tmp_path / "test.jsonl", test)
    line = one_line_error(
        check(
            pipeline(
                tmp_path / "p.toml",
                'train = "train.jsonl"\ntest = "test.jsonl"',
                inputs='kind = "numbers"\ncolumn = "x"',
            )
        )
    )
    assert "label(s) 'upp' occur only outside the training split" in line


def test_digit_strings_in_json_lines_are_text_and_in_csv_are_numbers(tmp_path):
    rows = [{"text": str(100 + i), "label": "ab"[i % 2]} for i in range(40)]
    _write(tmp_path / "d.jsonl", rows)
    assert check(pipeline(tmp_path / "p.toml", 'path = "d.jsonl"')).exit_code == 0  # JSON strings: text as written
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8"
    )
    assert "holds numbers in every record" in one_line_error(check(pipeline(tmp_path / "q.toml", 'path = "d.csv"')))
