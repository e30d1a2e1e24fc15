"""A third-party task, end to end: trained through its `seqpipe` entry point, served through its
torch-free `seqpipe.serving` entry point by `seqpipe predict`, in a process that cannot import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import predict_without_torch
from test_plugins import make_distribution, seqpipe_cli

VERDICT_TASK = """
    from seqpipe import hookimpl
    from seqpipe.builtin.classify.task import ClassifyTask

    class VerdictTask(ClassifyTask):
        '''Classification served as a yes/no verdict on one label.'''
        predict_example = '"some text" --label spam --threshold 0.5'
        example_pipeline = {"data": {"dataset": "spam-assassin"}}

    @hookimpl
    def register_tasks(register):
        register("verdict", VerdictTask)
"""

# torch-free: only what seqpipe's serving modules give
VERDICT_PREDICTOR = """
    from seqpipe import hookimpl
    from seqpipe.builtin.classify.serve import classify
    from seqpipe.predictor import Option, Predictor
    from seqpipe.serving.runtime import open_export

    class VerdictPredictor(Predictor):
        options = (
            Option("label", str, "spam", "the label the verdict is about"),
            Option("threshold", float, 0.5, "probability from which the verdict is yes"),
            Option("shout", bool, False, "upper-case verdicts"),
        )
        usage = '"text" --label spam --threshold 0.9'

        def predict(self, path, inputs, options):
            label, threshold = options.task["label"], options.task["threshold"]
            results = []
            for r in classify(open_export(path, device=options.device, precision=options.precision), inputs):
                verdict = "yes" if r["probabilities"][label] >= threshold else "no"
                verdict = verdict.upper() if options.task["shout"] else verdict
                results.append({"text": r["text"], "verdict": verdict, "probability": r["probabilities"][label],
                                "line": f"{verdict:<4} {r['text']}"})
            return results

    @hookimpl
    def register_predictors(register):
        register("verdict", VerdictPredictor)
"""


@pytest.fixture(scope="module")
def verdict_site(tmp_path_factory) -> Path:
    return make_distribution(
        tmp_path_factory.mktemp("dists"),
        "seqpipe-verdict",
        {"seqpipe_verdict": VERDICT_TASK, "seqpipe_verdict_serving": VERDICT_PREDICTOR},
        {"seqpipe": {"verdict": "seqpipe_verdict"}, "seqpipe.serving": {"verdict": "seqpipe_verdict_serving"}},
    )


def test_plugin_task_is_trained_then_served_without_torch(
    verdict_site, tmp_path, small_csv, write_pipeline, torch_blocked_env
):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, hidden=8)
    pipeline.write_text(pipeline.read_text().replace('name = "classify"', 'name = "verdict"'))
    run = seqpipe_cli(["run", str(pipeline), "--out", str(tmp_path / "out")], [verdict_site])
    assert run.returncode == 0, run.stderr
    assert "--label spam --threshold 0.5" in run.stdout  # the task's predict_example

    env = {**torch_blocked_env, "PYTHONPATH": os.pathsep.join([str(verdict_site), torch_blocked_env["PYTHONPATH"]])}
    texts = ["FREE money!!! click now", "Re: meeting notes"]
    everything = predict_without_torch(env, str(tmp_path / "out"), *texts, "--threshold", "0")
    nothing = predict_without_torch(
        env, str(tmp_path / "out"), "--threshold", "1.01", "--shout", "--label", "ham", *texts
    )
    assert [r["verdict"] for r in everything] == ["yes", "yes"] and [r["verdict"] for r in nothing] == ["NO", "NO"]
    assert [r["text"] for r in everything] == [r["text"] for r in nothing] == texts

    from seqpipe.builtin.classify.serve import classify
    from seqpipe.serving.runtime import open_export

    expected = classify(
        open_export(tmp_path / "out", device="cpu"), texts
    )  # the same ONNX file, read by the built-in helper
    assert [r["probability"] for r in everything] == pytest.approx(
        [e["probabilities"]["spam"] for e in expected], abs=1e-6
    )
    assert [r["probability"] for r in nothing] == pytest.approx([e["probabilities"]["ham"] for e in expected], abs=1e-6)

    wrong = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", str(tmp_path / "out"), "hi", "--steps", "3"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "task 'verdict' takes no option --steps; its options: --label, --threshold, --shout" in wrong.stderr

    unserved = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", str(tmp_path / "out"), "hi"],
        capture_output=True,
        text=True,
        env={**env, "SEQPIPE_BLOCK_PLUGINS": "verdict"},
    )
    assert unserved.returncode == 2 and unserved.stderr.count("\n") == 1
    assert (
        "task 'verdict' has no registered predictor" in unserved.stderr and "'seqpipe.serving' group" in unserved.stderr
    )


def test_plugin_predictor_is_listed_with_its_options(verdict_site):
    listed = seqpipe_cli(["plugins", "--json"], [verdict_site])
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["registered"]["task"]["verdict"] == data["registered"]["predictor"]["verdict"] == "verdict"
    assert data["serving_plugins"]["verdict"] == data["plugins"]["verdict"] == "seqpipe-verdict"
    assert data["registered"]["predictor"]["classify"] == "seqpipe.builtin.classify.serve"
    helped = seqpipe_cli(["predict", "--help"], [verdict_site])
    assert helped.returncode == 0, helped.stderr
    assert 'verdict:  seqpipe predict MODEL "text" --label spam --threshold 0.9' in helped.stdout
    assert "--threshold FLOAT" in helped.stdout and "--shout" in helped.stdout and "--steps INTEGER" in helped.stdout
