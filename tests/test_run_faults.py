"""Run directories and served files that refuse what they cannot trust: a lock per run directory, a
SHA-256 manifest checked on every read back, a resumed run that names what its pipeline file
changed, weight files without paths or times, serving that checks status, manifest, parity and
metadata, and the machine's faults (disk full, permission denied, a read-only folder) in one line.

Each fault is injected for real where the machine allows it (files truncated, bytes flipped,
metadata edited, a second process holding the lock) and by patching the one call that fails
where it does not (a full disk)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from seqpipe import manifest
from seqpipe.cli import main
from seqpipe.rundir import locked

TEXTS = [
    "win cash now",
    "free prize claim",
    "cheap pills here",
    "meeting at noon",
    "lunch tomorrow",
    "project notes attached",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny two-label CSV (real enough to train a step, quick to read)."""
    path = tmp_path_factory.mktemp("data") / "d.csv"
    rows = [f"{t} {i},{'spam' if j < 3 else 'ham'}" for i in range(20) for j, t in enumerate(TEXTS)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def pipeline(path: Path, data: Path, training: str = "epochs = 2\npatience = 5", export: str = "") -> Path:
    path.write_text(
        f'[data]\npath = "{data.as_posix()}"\n[model]\nhidden_size = 8\n[input]\nmax_length = 30\n'
        f"[task.options]\nembedding_size = 4\n[training]\nbatch_size = 16\nseed = 3\n{training}\n"
        f"[export]\nparity_sequences = 8\n{export}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data) -> Path:
    """A finished run, copied by each test that damages it."""
    root = tmp_path_factory.mktemp("finished")
    run = root / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline(root / "p.toml", data)), "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, data) -> Path:
    """A run stopped after its epochs (parity failed on purpose): resumable, copied by each test."""
    root = tmp_path_factory.mktemp("stopped")
    run = root / "run"
    result = CliRunner().invoke(
        main, ["run", str(pipeline(root / "p.toml", data, export="parity_tolerance = 1e-30")), "--out", str(run)]
    )
    assert result.exit_code == 1, result.output
    return run


def copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def one_line(result, code: int) -> str:
    """The one error line (after the run log's lines, if the run had started)."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]) and "Traceback" not in result.output, (
        result.output
    )
    return errors[0]


def resume(run: Path, *extra: str):
    return CliRunner().invoke(main, ["run", "--resume", str(run), *extra])


def status(run: Path) -> str:
    return json.loads((run / "status.json").read_text())["state"]


# -- the manifest ----------------------------------------------------------------------------------


def test_every_file_read_back_is_in_the_manifest_with_its_sha256(finished):
    files = json.loads((finished / manifest.MANIFEST_FILE).read_text())["files"]
    assert {"config.json", "model.safetensors", "onnx/step.onnx", "onnx/sequence.onnx"} <= set(files)
    assert (
        "resume.safetensors" not in files and not (finished / "resume.safetensors").exists()
    )  # done: nothing to resume
    for name, entry in files.items():
        assert entry == {"sha256": manifest.sha256(finished / name)}, name


def test_a_replace_killed_halfway_leaves_a_manifest_that_accepts_the_file_on_disk(tmp_path):
    """The manifest accepts the new hash before the rename: killed between the two, either file verifies."""
    run = tmp_path / "run"
    run.mkdir()
    manifest.start(run)
    (tmp_path / "a").write_bytes(b"old")
    manifest.replace(tmp_path / "a", run / "f")
    (tmp_path / "b").write_bytes(b"new")
    record = json.loads((run / manifest.MANIFEST_FILE).read_text())
    record["files"]["f"] = {"sha256": manifest.sha256(tmp_path / "b"), "previous": manifest.sha256(run / "f")}
    (run / manifest.MANIFEST_FILE).write_text(json.dumps(record))  # the state a kill before the rename leaves
    manifest.verify(run / "f", run, fix="-")
    (run / "f").write_bytes(b"other")
    with pytest.raises(Exception, match="SHA-256 differs"):
        manifest.verify(run / "f", run, fix="-")


# -- resuming --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "one tensor overwritten"])
def test_a_damaged_resume_state_is_refused_in_one_line(stopped, tmp_path, damage):
    run = copy(stopped, tmp_path)
    state = run / "resume.safetensors"
    raw = bytearray(state.read_bytes())
    if damage == "truncated":
        state.write_bytes(raw[: len(raw) // 2])
    else:
        raw[-64:-32] = bytes(32)  # the last tensor's bytes: a file safetensors still reads
        state.write_bytes(bytes(raw))
    line = one_line(resume(run), 1)
    assert f"{state}: its SHA-256 differs from the one in manifest.json" in line and "start it again" in line
    assert status(run) == "failed"  # what it was; nothing trained on the damaged state


def test_a_resumed_run_takes_its_history_from_the_checked_state_not_the_editable_log(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    logged = (run / "history.jsonl").read_text()
    (run / "history.jsonl").write_text(logged.replace('"best": true', '"best": false') + '{"epoch": 99}\n')
    resume(run)  # fails its parity check again (tolerance 1e-30): it got as far as evaluation and export
    assert (run / "history.jsonl").read_text() == logged


def test_a_run_directory_without_its_manifest_is_not_resumed(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    (run / manifest.MANIFEST_FILE).unlink()
    assert "has no manifest.json" in one_line(resume(run), 1)


@pytest.mark.parametrize(
    "edit, key", [("hidden_size = 8", "model.hidden_size (8 -> 12)"), ("seed = 3", "training.seed (3 -> 4)")]
)
def test_an_edited_pipeline_file_is_refused_naming_the_keys(stopped, tmp_path, edit, key):
    run = copy(stopped, tmp_path)
    new = edit.replace("8", "12").replace("3", "4")
    (run / "pipeline.toml").write_text((run / "pipeline.toml").read_text().replace(edit, new))
    line = one_line(resume(run), 2)
    assert key in line and "cannot continue under" in line and "start a new run" in line
    assert "--allow-changes" not in line  # not a key that may change
    assert "may change only" in one_line(resume(run, "--allow-changes", key.split()[0]), 2)


def test_a_budget_change_needs_allow_changes_and_is_recorded(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    text = (run / "pipeline.toml").read_text()
    (run / "pipeline.toml").write_text(text.replace("epochs = 2", "epochs = 3").replace("parity_tolerance = 1e-30", ""))
    line = one_line(resume(run), 2)
    assert "training.epochs (2 -> 3)" in line and "--allow-changes export.parity_tolerance training.epochs" in line
    done = resume(run, "--allow-changes", "epochs,export.parity_tolerance")
    assert done.exit_code == 0, done.output
    assert "resuming after epoch 2" in done.output and "epoch   3/3" in done.output
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["epochs"] == 3
    assert {c["key"] for c in config["resumed_changes"]} == {"training.epochs", "export.parity_tolerance"}


def test_a_second_resume_is_refused_while_the_first_holds_the_run(stopped, tmp_path):
    """The lock is held by another process, as a second terminal would find it."""
    run = copy(stopped, tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom seqpipe.rundir import locked\n"
            f"with locked(Path({str(run)!r})):\n    print('held', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_line(resume(run), 2)
        assert f"in use by another seqpipe run (process {holder.pid} on " in line
        assert not (run / "history.jsonl").read_text().count('"epoch": 3')
    finally:
        holder.kill()
        holder.wait()
    with locked(run):  # the lock went with the process that held it
        pass


# -- the machine's faults ----------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_run_is_marked_failed(tmp_path, data, monkeypatch):
    import seqpipe.checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(seqpipe.checkpoint, "save_file", full)
    run = tmp_path / "run"
    line = one_line(CliRunner().invoke(main, ["run", str(pipeline(tmp_path / "p.toml", data)), "--out", str(run)]), 1)
    assert f"{run}: the disk is full (No space left on device)" in line and f"seqpipe run --resume {run}" in line
    assert status(run) == "failed"
    assert not (run / "model.safetensors").exists() and not list(
        run.glob(".model.safetensors-*")
    )  # nothing half-written left


def test_a_read_only_run_directory_is_one_line(tmp_path, data, monkeypatch):
    import seqpipe.rundir

    real = seqpipe.rundir.os.open

    def read_only(path, *args, **kwargs):
        if Path(path).parent == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(seqpipe.rundir.os, "open", read_only)
    line = one_line(
        CliRunner().invoke(main, ["run", str(pipeline(tmp_path / "p.toml", data)), "--out", str(tmp_path / "ro")]), 2
    )
    assert f"--out {tmp_path / 'ro'}: cannot write there (Read-only file system)" in line


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path, data):
    target = Path("/sys/seqpipe-test-run")
    result = CliRunner().invoke(main, ["run", str(pipeline(tmp_path / "p.toml", data)), "--out", str(target)])
    if target.exists():  # pragma: no cover - a machine that lets us write there
        shutil.rmtree(target)
        pytest.skip("this machine lets the test create folders in /sys")
    assert "cannot create the run directory" in one_line(result, 2)


# -- reproducible files --------------------------------------------------------------------------


def test_the_same_training_gives_the_same_weight_file_wherever_it_runs(finished, tmp_path, data):
    from safetensors import safe_open

    other = tmp_path / "elsewhere" / "run"
    (tmp_path / "elsewhere").mkdir()
    result = CliRunner().invoke(
        main, ["run", str(pipeline(tmp_path / "elsewhere" / "other-name.toml", data)), "--out", str(other)]
    )
    assert result.exit_code == 0, result.output
    assert (other / "model.safetensors").read_bytes() == (finished / "model.safetensors").read_bytes()
    with safe_open(str(other / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"task": "classify"}


# -- serving ---------------------------------------------------------------------------------------


def predict(model: Path, *extra: str):
    return CliRunner().invoke(main, ["predict", str(model), *extra, "win cash"])


def test_a_graph_of_a_failed_run_is_not_served_unless_unchecked(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    assert "this run is failed" in one_line(predict(run / "onnx" / "step.onnx"), 2)
    alone = tmp_path / "alone.onnx"
    shutil.copyfile(run / "onnx" / "step.onnx", alone)  # out of its run directory: its own metadata says parity failed
    assert "its parity check against torch failed" in one_line(predict(alone), 2)
    served = predict(alone, "--unchecked")
    assert served.exit_code == 0 and "unchecked: serving" in served.output and "spam" in served.output


def test_a_graph_whose_parity_was_never_checked_is_not_served(finished, tmp_path):
    from seqpipe.onnx.spec import write_metadata
    from seqpipe.serving.metadata import read_spec

    alone = tmp_path / "step.onnx"
    shutil.copyfile(finished / "onnx" / "step.onnx", alone)
    spec = read_spec(onnx.load(str(alone)), alone)
    write_metadata(alone, {**spec, "parity": {"status": "pending"}})  # as an export killed before its check leaves it
    assert "its parity check against torch never checked" in one_line(predict(alone), 2)


def test_a_graph_changed_in_its_run_directory_is_refused(finished, tmp_path):
    run = copy(finished, tmp_path)
    model = onnx.load(str(run / "onnx" / "sequence.onnx"))
    model.doc_string = "edited"
    onnx.save(model, str(run / "onnx" / "sequence.onnx"))
    assert "sequence.onnx: its SHA-256 differs from the one in manifest.json" in one_line(predict(run), 1)
    assert "its SHA-256 differs" in one_line(predict(run / "onnx" / "sequence.onnx"), 1)
    assert predict(run, "--unchecked").exit_code == 0


def edit_metadata(path: Path, edit) -> None:
    """Change ``seqpipe.*`` metadata by hand, as a user with a text editor or onnx.helper would."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    edit(props)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _swap_labels(props):
    spec = json.loads(props["seqpipe.spec"])
    spec["encoding"]["output"]["labels"].reverse()
    props["seqpipe.spec"] = json.dumps(spec)


def _without_checksum(change):
    def edit(props):
        props.pop("seqpipe.checksum")
        change(props)

    return edit


def _spec_edit(change):
    def edit(props):
        spec = json.loads(props["seqpipe.spec"])
        change(spec)
        props["seqpipe.spec"] = json.dumps(spec)

    return _without_checksum(edit)


METADATA_FAULTS = {
    "labels swapped": (_swap_labels, "its seqpipe metadata was edited after export"),
    "flat labels shortened": (
        lambda p: p.update({"seqpipe.labels": '["ham"]'}),
        "its seqpipe metadata was edited after export",
    ),
    "spec not JSON (older file)": (
        _without_checksum(lambda p: p.update({"seqpipe.spec": "{not json"})),
        "is not valid JSON",
    ),
    "spec without task (older file)": (_spec_edit(lambda s: s.pop("task")), "lacks 'task'"),
    "input dtype edited (older file)": (
        _spec_edit(lambda s: s["inputs"][0].update(dtype="float32")),
        "says input 'x' is float32, the graph takes int64",
    ),
    "input dtype not a dtype (older file)": (
        _spec_edit(lambda s: s["inputs"][0].update(dtype="int65")),
        "not a numpy dtype",
    ),
}


@pytest.mark.parametrize("fault", METADATA_FAULTS)
def test_edited_metadata_is_refused_in_one_line(finished, tmp_path, fault):
    edit, said = METADATA_FAULTS[fault]
    alone = tmp_path / "step.onnx"
    shutil.copyfile(finished / "onnx" / "step.onnx", alone)
    edit_metadata(alone, edit)
    assert said in one_line(predict(alone, "--unchecked"), 2)  # even unchecked: a file that cannot say what it is


def test_external_data_is_read_only_from_beside_the_model(finished, tmp_path, monkeypatch):
    from seqpipe.serving.runtime import StepRunner

    model = onnx.load(str(finished / "onnx" / "step.onnx"))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(
        model,
        str(folder / "step.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    monkeypatch.chdir(tmp_path)  # not the model's folder: the data must still be found beside the model
    assert StepRunner(folder / "step.onnx", device="cpu").spec["task"] == "classify"
    shutil.move(folder / "weights.bin", tmp_path / "weights.bin")  # only in the current folder now
    with pytest.raises(Exception, match="which is not beside the model"):
        StepRunner(folder / "step.onnx", device="cpu")
    (tmp_path / "weights.bin").unlink()
    elsewhere = onnx.load(str(finished / "onnx" / "step.onnx"))
    onnx.save(
        elsewhere,
        str(folder / "step.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    edit = onnx.load(str(folder / "step.onnx"), load_external_data=False)
    for tensor in edit.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(edit, str(folder / "step.onnx"))
    with pytest.raises(Exception, match="not a file beside the model"):
        StepRunner(folder / "step.onnx", device="cpu")


# -- killed anywhere -------------------------------------------------------------------------------


def test_runs_killed_at_random_moments_end_done_with_the_uninterrupted_weights(tmp_path):
    """Three of benchmarks/kill_resume.py's trials (it runs twenty): SIGKILL at a random moment of the
    run, then the way on its messages give; every trial ends done, bit-identical to a run never stopped."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kill_resume", Path(__file__).parents[1] / "benchmarks" / "kill_resume.py"
    )
    kill_resume = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_resume)
    _, _, results = kill_resume.run_trials(3, seed=7, folder=tmp_path)
    assert all(r["state"] == "done" and r["identical"] for r in results), results
