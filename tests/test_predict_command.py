"""`seqpipe predict`'s two-stage parsing: common options first, then the file's task's own options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, _write_pipeline

from seqpipe.builtin.predictors import ForecastPredictor, GeneratePredictor
from seqpipe.cli import main
from seqpipe.errors import PluginError, SeqpipeError
from seqpipe.registry import Registry
from seqpipe.serving.command import parse_task_arguments, predict as predict_command
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
    assert inputs == [] and values == {"condition": None, "count": 2, "temperature": 0.5, "beam": 1, "seed": 0, "max_length": 9}
    assert parse(ForecastPredictor, "--", "-5.csv", "--steps") == (["-5.csv", "--steps"], {"steps": 5})


@pytest.mark.parametrize("args,fragment", [
    (["--step", "3"], "task 't' takes no option --step (did you mean '--steps'?); its options: --steps (besides --device"),
    (["--steps", "many"], "task 't': Invalid value for '--steps': 'many' is not a valid integer."),
    (["--steps"], "task 't': Option '--steps' requires an argument."),
])
def test_task_usage_mistakes_are_one_line(args, fragment):
    with pytest.raises(SeqpipeError) as refused:
        parse(ForecastPredictor, "a.csv", *args)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_option_of_another_task_is_refused_naming_the_task(classify_run):
    result = CliRunner().invoke(main, ["predict", str(classify_run), "hello", "--steps", "3"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "task 'classify' takes no option --steps; its options: none (besides --device, --precision, --json" in result.output


def test_common_options_anywhere_and_inputs_after_double_dash(classify_run):
    result = CliRunner().invoke(main, ["predict", "--json", str(classify_run), "hello", "--device", "cpu", "--", "-5 degrees", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["hello", "-5 degrees", "--json"]


def test_python_api_takes_task_options_by_name(classify_run):
    assert [r["text"] for r in predict(classify_run, ["hello"], device="cpu")] == ["hello"]
    with pytest.raises(SeqpipeError, match="task 'classify' takes no option 'steps'; it takes: none"):
        predict(classify_run, ["hello"], steps=3)
    with pytest.raises(PluginError, match="task 'classify' has no registered predictor .*'seqpipe.serving' group"):
        predict(classify_run, ["hello"], registry=Registry())
