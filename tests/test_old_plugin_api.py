"""A plugin written against the previous releases' API, unchanged: its task trains through `seqpipe
run` and its predictor serves through `seqpipe predict` without torch, and each name it imports from
where it used to be is one line on stderr saying where that name went."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from conftest import predict_without_torch
from test_plugins import make_distribution, seqpipe_cli

OLD_TASK = """
    from seqpipe import hookimpl
    from seqpipe.builtin.classify import ClassifyTask          # 0.1: the task module; now .task

    class OldTask(ClassifyTask):
        pass

    @hookimpl
    def register_tasks(register):
        register("old", OldTask)
"""

OLD_PREDICTOR = """
    from seqpipe import hookimpl
    from seqpipe.predict import classify                       # 0.1: seqpipe.predict; now each task's serve.py
    from seqpipe.runtime import open_export                    # 0.1: seqpipe.runtime; now seqpipe.serving.runtime
    from seqpipe.serving.predictor import Option, Predictor    # 0.1: now seqpipe.predictor

    class OldPredictor(Predictor):
        options = (Option("label", str, "spam", "the label whose probability is given"),)

        def predict(self, path, inputs, options):
            runner = open_export(path, device=options.device, precision=options.precision)
            return [{"text": r["text"], "probability": r["probabilities"][options.task["label"]], "line": r["text"]}
                    for r in classify(runner, inputs)]

    @hookimpl
    def register_predictors(register):
        register("old", OldPredictor)
"""

MOVED = {  # old name -> new home, one line each
    "seqpipe.builtin.classify.ClassifyTask": "seqpipe.builtin.classify.task.ClassifyTask",
    "seqpipe.predict.classify": "seqpipe.builtin.classify.serve.classify",
    "seqpipe.runtime.open_export": "seqpipe.serving.runtime.open_export",
    "seqpipe.serving.predictor.Option": "seqpipe.predictor.Option",
    "seqpipe.serving.predictor.Predictor": "seqpipe.predictor.Predictor",
}


@pytest.fixture(scope="module")
def old_site(tmp_path_factory):
    return make_distribution(
        tmp_path_factory.mktemp("dists"),
        "seqpipe-old",
        {"seqpipe_old": OLD_TASK, "seqpipe_old_serving": OLD_PREDICTOR},
        {"seqpipe": {"old": "seqpipe_old"}, "seqpipe.serving": {"old": "seqpipe_old_serving"}},
    )


def _moved_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " moved to " in line]


def test_an_old_plugin_trains_and_serves_unchanged_and_each_moved_name_is_one_line(
    old_site, tmp_path, small_csv, write_pipeline, torch_blocked_env
):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, hidden=8)
    pipeline.write_text(pipeline.read_text().replace('name = "classify"', 'name = "old"'))
    run = seqpipe_cli(["run", str(pipeline), "--out", str(tmp_path / "out")], [old_site])
    assert run.returncode == 0, run.stderr
    said = _moved_lines(run.stderr)
    assert len(said) == 1 and said[0].startswith("seqpipe: ") and "seqpipe_old.py:3: " in said[0]
    assert (
        "seqpipe.builtin.classify.ClassifyTask moved to seqpipe.builtin.classify.task.ClassifyTask: import it from "
        "there (the old name goes in seqpipe 0.3)"
    ) in said[0]

    env = {**torch_blocked_env, "PYTHONPATH": os.pathsep.join([str(old_site), torch_blocked_env["PYTHONPATH"]])}
    served = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", str(tmp_path / "out"), "FREE money!!!", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert served.returncode == 0, served.stderr
    said = _moved_lines(served.stderr)
    assert sorted(line.split(": ", 2)[2].split(" moved to ")[0] for line in said) == sorted(
        set(MOVED) - {"seqpipe.builtin.classify.ClassifyTask"}
    )
    for line in said:
        old = line.split(": ", 2)[2].split(" moved to ")[0]
        assert f"{old} moved to {MOVED[old]}:" in line and "seqpipe_old_serving.py:" in line

    from seqpipe.builtin.classify.serve import classify
    from seqpipe.serving.runtime import open_export

    expected = classify(open_export(tmp_path / "out", device="cpu"), ["FREE money!!!"])[0]["probabilities"]["spam"]
    got = predict_without_torch(env, str(tmp_path / "out"), "FREE money!!!")
    assert got[0]["probability"] == pytest.approx(expected, abs=1e-6)


def test_moved_names_resolve_to_the_same_objects_with_a_warning_naming_the_new_home():
    from seqpipe.builtin.classify.serve import classify
    from seqpipe.builtin.generate.serve import Generator
    from seqpipe.deprecation import MovedNameWarning
    from seqpipe.onnx.spec import write_metadata
    from seqpipe.serving.decoding import BEAM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from seqpipe.builtin.predictors import BEAM as old_beam
        from seqpipe.export import write_metadata as old_write_metadata
        from seqpipe.serving.predict import Generator as old_generator
        from seqpipe.serving.predict import classify as old_classify
    assert (old_beam, old_write_metadata, old_generator, old_classify) == (BEAM, write_metadata, Generator, classify)
    lines = [str(w.message) for w in caught if issubclass(w.category, MovedNameWarning)]
    assert lines == [
        "seqpipe.builtin.predictors.BEAM moved to seqpipe.serving.decoding.BEAM: import it from there (the old name "
        "goes in seqpipe 0.3).",
        "seqpipe.export.write_metadata moved to seqpipe.onnx.spec.write_metadata: import it from there (the old name "
        "goes in "
        "seqpipe 0.3).",
        "seqpipe.serving.predict.Generator moved to seqpipe.builtin.generate.serve.Generator: import it from there "
        "(the old "
        "name goes in seqpipe 0.3).",
        "seqpipe.serving.predict.classify moved to seqpipe.builtin.classify.serve.classify: import it from there (the "
        "old "
        "name goes in seqpipe 0.3).",
    ]
    assert all(w.filename == __file__ for w in caught)  # each names the line that imported it
    with pytest.raises(ImportError, match="cannot import name 'nothing_like_this' from 'seqpipe.export'"):
        from seqpipe.export import nothing_like_this  # noqa: F401


def test_plugins_shows_each_distribution_version_and_flags_one_built_for_another_seqpipe(tmp_path):
    import json

    from seqpipe import __version__

    cell = OLD_TASK.replace('"old"', '"older"').replace("OldTask", "OlderTask")
    old = make_distribution(
        tmp_path / "a",
        "seqpipe-older",
        {"seqpipe_older": cell},
        {"seqpipe": {"older": "seqpipe_older"}},
        dependencies=("seqpipe>=0.1,<0.2",),
        version="1.4.0",
    )
    fits = make_distribution(
        tmp_path / "b",
        "seqpipe-fits",
        {"seqpipe_fits": cell.replace('"older"', '"fits"')},
        {"seqpipe": {"fits": "seqpipe_fits"}},
        dependencies=("seqpipe>=0.2,<0.3",),
        version="2.0.0",
    )
    listed = seqpipe_cli(["plugins"], [old, fits])
    assert listed.returncode == 0, listed.stderr
    assert "older            older (seqpipe-older 1.4.0)" in listed.stdout
    assert "fits             fits (seqpipe-fits 2.0.0)" in listed.stdout
    flagged = [line for line in listed.stdout.splitlines() if line.startswith("incompatible:")]
    assert flagged == [
        f"incompatible: seqpipe-older 1.4.0 requires seqpipe<0.2,>=0.1, and this is seqpipe {__version__}: its "
        "plugins may use names that moved or changed (the changelog's 'For plugin authors' says which); "
        "upgrade seqpipe-older, or install a seqpipe it supports."
    ]
    data = json.loads(seqpipe_cli(["plugins", "--json"], [old, fits]).stdout)["distributions"]
    assert data["seqpipe-older"] == {"version": "1.4.0", "requires_seqpipe": "<0.2,>=0.1", "compatible": False}
    assert data["seqpipe-fits"]["compatible"] is True
