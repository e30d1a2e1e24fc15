"""`seqpipe predict`'s two-stage parsing: common options first, then the file's task's own options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import REPO, _write_pipeline
from seqpipe.builtin.forecast.serve import ForecastPredictor
from seqpipe.builtin.generate.serve import GeneratePredictor
from seqpipe.cli import main
from seqpipe.errors import PluginError, SeqpipeError
from seqpipe.registry import Registry
from seqpipe.serving.command import parse_task_arguments
from seqpipe.serving.command import predict as predict_command
from seqpipe.serving.predict import predict


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classify")
    shutil.copy(REPO / "tests" / "data" / "subjects-300.jsonl", root / "data.jsonl")
    pipeline = _write_pipeline(root / "p.toml", root / "data.jsonl", hidden=8)
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root / "out"


def parse(predictor, *args: str):
    return parse_task_arguments("t", predictor, list(args), click.Context(predict_command))


def test_task_options_are_parsed_with_defaults_anywhere_after_model():
    assert parse(ForecastPredictor, "a.csv") == (["a.csv"], {"steps": 5})
    inputs, values = parse(GeneratePredictor, "--count", "2", "--max-length", "9", "--temperature", "0.5")
    assert inputs == [] and values == {
        "condition": None,
        "count": 2,
        "temperature": 0.5,
        "beam": 1,
        "seed": 0,
        "max_length": 9,
    }
    assert parse(ForecastPredictor, "--", "-5.csv", "--steps") == (["-5.csv", "--steps"], {"steps": 5})


@pytest.mark.parametrize(
    "args,fragment",
    [
        (
            ["--step", "3"],
            "task 't' takes no option --step (did you mean '--steps'?); its options: --steps (besides --device",
        ),
        (["--steps", "many"], "task 't': Invalid value for '--steps': 'many' is not a valid integer."),
        (["--steps"], "task 't': Option '--steps' requires an argument."),
    ],
)
def test_task_usage_mistakes_are_one_line(args, fragment):
    with pytest.raises(SeqpipeError) as refused:
        parse(ForecastPredictor, "a.csv", *args)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert "--file" not in str(refused.value)  # a forecast reads one series file: --file is not among its options


def test_option_of_another_task_is_refused_naming_the_task(classify_run):
    result = CliRunner().invoke(main, ["predict", str(classify_run), "hello", "--steps", "3"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert (
        "task 'classify' takes no option --steps; its options: --top-k (besides --device, --precision, --json"
        in result.output
    )


def test_common_options_anywhere_and_inputs_after_double_dash(classify_run):
    result = CliRunner().invoke(
        main, ["predict", "--json", str(classify_run), "hello", "--device", "cpu", "--", "-5 degrees", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["hello", "-5 degrees", "--json"]


def test_python_api_takes_task_options_by_name(classify_run):
    assert [r["text"] for r in predict(classify_run, ["hello"], device="cpu")] == ["hello"]
    with pytest.raises(SeqpipeError, match="task 'classify' takes no option 'steps'; it takes: --top-k"):
        predict(classify_run, ["hello"], steps=3)
    with pytest.raises(PluginError, match="task 'classify' has no registered predictor .*'seqpipe.serving' group"):
        predict(classify_run, ["hello"], registry=Registry())


def _predicted(run: Path, *args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, ["predict", str(run), "--json", *args])
    lines = result.stdout.splitlines() if result.exit_code == 0 else []
    return (
        result.exit_code,
        [json.loads(line) for line in lines],
        result.stderr if result.exit_code == 0 else result.output,
    )


def test_file_inputs_stream_in_chunks_through_one_session_and_match_arguments(classify_run, tmp_path, monkeypatch):
    from seqpipe.serving import command, runtime

    texts = [f"subject number {i} {'win money' if i % 3 else 'meeting notes'}" for i in range(2 * command.CHUNK + 7)]
    (tmp_path / "inputs.txt").write_text(
        "\n".join(texts[:5]) + "\n\n  \n" + "\n".join(texts[5:]) + "\n", encoding="utf-8"
    )
    opened = []
    real_open = runtime.OnnxGraph._open
    monkeypatch.setattr(runtime.OnnxGraph, "_open", lambda self, *a: (opened.append(a[0]), real_open(self, *a))[1])
    code, results, said = _predicted(classify_run, "--file", str(tmp_path / "inputs.txt"))
    assert (
        code == 0 and [r["text"] for r in results] == texts
    )  # every input, in order, the blank lines left out and said
    assert [r["input_line"] for r in results[4:6]] == [5, 8] and "2 blank line(s) skipped" in said
    assert len([p for p in opened if p.name == "sequence.onnx"]) == 1  # three chunks, one session
    direct = predict(classify_run, texts[:3], device="cpu")
    assert [r["probabilities"] for r in results[:3]] == [r["probabilities"] for r in direct]


def test_file_inputs_from_csv_and_jsonl_columns(classify_run, tmp_path):
    (tmp_path / "a.csv").write_text('id,text\n1,"hello, world"\n2,"two\nlines"\n3,plain\n', encoding="utf-8")
    code, results, _ = _predicted(classify_run, "--file", str(tmp_path / "a.csv"))  # the model's own column: text
    assert code == 0 and [r["text"] for r in results] == ["hello, world", "two\nlines", "plain"]
    assert [r["input_line"] for r in results] == [2, 3, 5]
    (tmp_path / "b.jsonl").write_text('{"subject": "free offer"}\n{"subject": ["lunch", "?"]}\n', encoding="utf-8")
    code, results, _ = _predicted(classify_run, "--file", str(tmp_path / "b.jsonl"), "--column", "subject")
    assert code == 0 and [r["text"] for r in results] == [
        "free offer",
        "lunch ?",
    ]  # a token list: tokens between spaces
    long = "x" * 200_000  # longer than csv's default field limit
    (tmp_path / "c.csv").write_text(f"text\n{long}\n", encoding="utf-8")
    code, results, _ = _predicted(classify_run, "--file", str(tmp_path / "c.csv"))
    assert code == 0 and results[0]["text"] == long and results[0]["truncated_to"] == 40


@pytest.mark.parametrize(
    "name,content,args,said",
    [
        (
            "a.csv",
            "id,body\n1,x\n",
            [],
            "a.csv:1: the header ('id', 'body') has no column 'text' (the model's input column); add a",
        ),
        ("a.csv", "text,label\nhello,spam,extra\n", [], "a.csv:2: 3 fields and the header has 2"),
        ("a.csv", "text,text\nhello,hi\n", [], "a.csv:1: column name 'text' appears twice"),
        ("a.jsonl", '{"text": "ok"}\n[1, 2]\n', [], "a.jsonl:2: a JSON list, not an object"),
        (
            "a.jsonl",
            '{"text": "ok"}\n{"text": 5}\n',
            [],
            "a.jsonl:2: column 'text' holds 5, not text, tokens or number vectors",
        ),
        (
            "a.jsonl",
            '{"text": ["New York", "is", "big"]}\n',
            [],
            "a.jsonl:1: column 'text' lists an empty token or one holding a space",
        ),
        ("a.csv", 'text,label\nhello,"1\nworld,0\nfoo,1\n', [], "a.csv:2: a quote opened here is never closed"),
        ("a.csv", "great movie\nawful plot\n", [], "a.csv:1: the header ('great movie') has no column 'text'"),
        ("a.csv", "text,label\rhello,1\r", [], "a.csv:"),
        ("a.txt", "fine\n", ["--column", "text"], "--column text: "),
        ("a.txt", "", [], "holds no inputs"),
        ("missing.txt", None, [], "--file "),
    ],
)
def test_file_faults_are_one_line(classify_run, tmp_path, name, content, args, said):
    if content is not None:
        (tmp_path / name).write_text(content, encoding="utf-8")
    code, _, output = _predicted(classify_run, "--file", str(tmp_path / name), *args)
    assert code == 2 and said in output and len(output.strip().splitlines()) == 1, output


def test_file_bytes_that_are_not_utf8_are_refused_naming_the_line(classify_run, tmp_path):
    (tmp_path / "a.txt").write_bytes("fine\nstill fine\ncaf\xe9\n".encode("latin-1"))
    code, _, output = _predicted(classify_run, "--file", str(tmp_path / "a.txt"))
    assert code == 2 and "a.txt:3: byte 4 of the line is not UTF-8 text" in output


def test_file_and_arguments_together_and_tasks_without_inputs_are_refused(classify_run, tmp_path):
    (tmp_path / "a.txt").write_text("x\n", encoding="utf-8")
    code, _, output = _predicted(classify_run, "hello", "--file", str(tmp_path / "a.txt"))
    assert code == 2 and "as arguments or with --file, not both" in output
    code, _, output = _predicted(classify_run, "hello", "--column", "text")
    assert code == 2 and "--column goes with --file" in output


def test_top_k_keeps_the_most_probable_labels_in_order(classify_run):
    code, full, _ = _predicted(classify_run, "free money now")
    code_k, top, _ = _predicted(classify_run, "free money now", "--top-k", "1")
    assert code == code_k == 0 and len(top[0]["probabilities"]) == 1
    best = max(full[0]["probabilities"], key=full[0]["probabilities"].get)
    assert top[0]["probabilities"] == {best: full[0]["probabilities"][best]} and top[0]["label"] == best
    refused = CliRunner().invoke(main, ["predict", str(classify_run), "x", "--top-k", "0"])
    assert refused.exit_code == 2 and "--top-k 0: give at least 1" in refused.output


def test_an_input_the_model_refuses_is_named_by_its_line_in_the_file():
    from seqpipe.serving.command import _in_file
    from seqpipe.serving.input_file import FileInput

    chunk = [FileInput(line, "[[1, 2]]") for line in (513, 515, 520)]
    moved = _in_file(
        SeqpipeError("input 2: 2 numbers per step, and the model reads 12 (its features); give 12 per step."),
        Path("x.jsonl"),
        chunk,
    )
    assert str(moved) == "x.jsonl:515: 2 numbers per step, and the model reads 12 (its features); give 12 per step."
    other = SeqpipeError("--top-k 0: give at least 1 (the most probable label).")
    assert _in_file(other, Path("x.jsonl"), chunk) is other  # an option's fault is not a line's


def test_a_graph_file_given_alone_is_read_once_however_many_chunks(classify_run, tmp_path, monkeypatch):
    import onnx

    from seqpipe.serving import command

    real_load, loads = onnx.load, []
    monkeypatch.setattr(onnx, "load", lambda *a, **k: (loads.append(a[0]), real_load(*a, **k))[1])
    counts = []
    for n in (1, 3 * command.CHUNK):
        (tmp_path / "in.txt").write_text("".join(f"text {i}\n" for i in range(n)), encoding="utf-8")
        loads.clear()
        code, results, _ = _predicted(classify_run / "onnx" / "sequence.onnx", "--file", str(tmp_path / "in.txt"))
        assert code == 0 and len(results) == n
        counts.append(len(loads))
    assert counts[0] == counts[1]  # one chunk or three: the same reads of the file
