"""A run directory says what state it is in (status.json), keeps a per-epoch log (history.jsonl),
honours a time budget, and is never served by `seqpipe predict` unless it finished."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from seqpipe.cli import main


def pipeline(path: Path, data: Path, training: str, export: str = "") -> Path:
    path.write_text(
        f'[data]\npath = "{data.as_posix()}"\n[model]\nhidden_size = 16\n[input]\nmax_length = 40\n[task.options]\n'
        f"embedding_size = 8\n[training]\nbatch_size = 32\n{training}\n[export]\nparity_sequences = 40\n{export}\n",
        encoding="utf-8",
    )
    return path


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def test_a_finished_run_is_done_and_logged_epoch_by_epoch(tmp_path, small_csv):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(pipeline(tmp_path / "p.toml", small_csv, "epochs = 3\npatience = 5")), "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert status(run)["state"] == "done"
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    history = json.loads((run / "metrics.json").read_text())["training"]["history"]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines == json.loads(json.dumps(history))


def test_the_time_budget_stops_training_and_still_exports(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 50\npatience = 50\nmax_minutes = 0.0001")
    result = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "time budget: " in result.output and "spent after epoch 1; stopping here" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 1 and json.loads((run / "parity.json").read_text())["passed"]
    assert status(run)["state"] == "done"


def test_a_failed_run_says_so_and_is_not_served(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 1", "parity_tolerance = 1e-30")
    result = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
    assert result.exit_code == 1, result.output
    recorded = status(run)
    assert (
        recorded["state"] == "failed"
        and "parity failed" in recorded["error"]
        and "(torch and it differ by " in recorded["error"]
    )
    served = CliRunner().invoke(main, ["predict", str(run), "hello"])
    assert served.exit_code == 2 and served.output.strip().splitlines() == [
        f"error: {run}: this run is failed (status.json: {recorded['error']}), not a finished model; "
        f"run the pipeline again: seqpipe run {run / 'pipeline.toml'}"
    ]


@pytest.mark.parametrize("sent,code,line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_run_records_it_and_exits_with_the_signal_code(tmp_path, small_csv, sent, code, line):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 10000\npatience = 10000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(p), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    # an epoch complete and its resume state saved (written just after the history line)
    while not (
        (run / "history.jsonl").is_file()
        and (run / "history.jsonl").read_text().strip()
        and (run / "resume.safetensors").is_file()
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert (
        err.strip().splitlines()[-1]
        == f"{line}; continue from the last complete epoch with: seqpipe run --resume {run}"
    )
    assert "Traceback" not in err
    assert status(run)["state"] == "interrupted"
    served = CliRunner().invoke(main, ["predict", str(run), "hello"])
    assert served.exit_code == 2 and "this run is interrupted" in served.output
    assert f"continue it from its last complete epoch: seqpipe run --resume {run}" in served.output


def test_a_killed_run_resumed_ends_bit_identical_to_an_uninterrupted_one(tmp_path, small_csv):
    """SIGKILL after a complete epoch, then `seqpipe run --resume`: the same weights, bit for bit, and
    the same metrics and history as the run that was never stopped (CPU)."""
    from safetensors.torch import load_file

    # dropout and EMA exercise the saved random and averaged state; lr_decay the saved learning rate
    training = "epochs = 8\npatience = 100\nlr_decay = 0.7\nema_decay = 0.9\nthreads = 1"
    p = pipeline(tmp_path / "p.toml", small_csv, training)
    p.write_text(p.read_text().replace("embedding_size = 8", "embedding_size = 8\ndropout = 0.2\ntoken_dropout = 0.1"))
    whole = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(p), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (
        (run / "trainer_state.json").is_file() and json.loads((run / "trainer_state.json").read_text())["epoch"] >= 2
    ):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert status(run)["state"] == "running"  # killed: nothing had the chance to record it
    served = CliRunner().invoke(main, ["predict", str(run), "hello"])  # its process is gone: said, with the way on
    assert served.exit_code == 2 and "this run is stopped without finishing (its process is gone" in served.output
    assert f"seqpipe run --resume {run}" in served.output
    killed_at = json.loads((run / "trainer_state.json").read_text())["epoch"]
    assert killed_at < 8

    resumed = CliRunner().invoke(main, ["run", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming after epoch {killed_at}" in resumed.output and status(run)["state"] == "done"
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "whole", run))
    assert ma["test"] == mb["test"]

    def strip(history):
        return [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in history]

    assert strip(ma["training"]["history"]) == strip(mb["training"]["history"])


def test_resume_refuses_what_it_cannot_continue(tmp_path, small_csv):
    run = tmp_path / "run"
    assert (
        CliRunner()
        .invoke(main, ["run", str(pipeline(tmp_path / "p.toml", small_csv, "epochs = 1")), "--out", str(run)])
        .exit_code
        == 0
    )
    done = CliRunner().invoke(main, ["run", "--resume", str(run)])
    assert done.exit_code == 2 and "this run is done; nothing to resume" in done.output
    both = CliRunner().invoke(main, ["run", str(tmp_path / "p.toml"), "--resume", str(run)])
    assert both.exit_code == 2 and "or --resume RUN_DIR alone" in both.output


def test_a_run_that_failed_after_training_resumes_without_training_more(tmp_path, small_csv):
    """Early stopping had ended training when export failed: resuming goes straight to evaluation and export."""
    run = tmp_path / "run"
    p = pipeline(
        tmp_path / "p.toml", small_csv, "epochs = 30\npatience = 1\nlearning_rate = 1e-9", "parity_tolerance = 1e-30"
    )
    first = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
    assert first.exit_code == 1 and status(run)["state"] == "failed"
    epochs = json.loads((run / "trainer_state.json").read_text())["epoch"]
    assert epochs < 30  # stopped early: a learning rate this small never improves on the first epoch
    p.write_text(p.read_text().replace("parity_tolerance = 1e-30", ""))  # the user's file; the run keeps its own copy
    (run / "pipeline.toml").write_text((run / "pipeline.toml").read_text().replace("parity_tolerance = 1e-30", ""))
    refused = CliRunner().invoke(main, ["run", "--resume", str(run)])  # a changed key is named, never applied silently
    assert refused.exit_code == 2 and "export.parity_tolerance (1e-30 -> 1e-05)" in refused.output, refused.output
    assert "--allow-changes export.parity_tolerance" in refused.output
    resumed = CliRunner().invoke(main, ["run", "--resume", str(run), "--allow-changes", "export.parity_tolerance"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "config.json").read_text())["resumed_changes"] == [
        {"key": "export.parity_tolerance", "from": 1e-30, "to": 1e-05, "after_epoch": epochs}
    ]
    assert f"resuming after epoch {epochs}" in resumed.output
    assert not re.search(r"^epoch +\d+/30", resumed.output, flags=re.MULTILINE)  # no epoch trained again
    assert len((run / "history.jsonl").read_text().splitlines()) == epochs and status(run)["state"] == "done"


def test_bf16_autocast_trains_on_cpu_and_exports_fp32(tmp_path, small_csv):
    """bf16 changes the training arithmetic only: the weights stay fp32 and the exports pass parity."""
    from safetensors.torch import load_file

    runs = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        p = pipeline(tmp_path / f"{precision}.toml", small_csv, f'epochs = 2\nprecision = "{precision}"')
        result = CliRunner().invoke(main, ["run", str(p), "--out", str(run)])
        assert result.exit_code == 0, result.output
        runs[precision] = json.loads((run / "metrics.json").read_text())
        assert json.loads((run / "parity.json").read_text())["passed"]
        assert all(t.dtype == torch.float32 for t in load_file(str(run / "model.safetensors")).values())
    assert runs["bf16"]["training"]["precision"] == "bf16"
    losses = [[r["train_loss"] for r in runs[p]["training"]["history"]] for p in ("fp32", "bf16")]
    assert losses[0] != losses[1]  # the arithmetic did change


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is seen: fp16 and cuda are allowed here")
def test_fp16_training_is_refused_on_the_cpu(tmp_path, small_csv):
    result = CliRunner().invoke(main, ["check", str(pipeline(tmp_path / "p.toml", small_csv, 'precision = "fp16"'))])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "training.precision: fp16 training needs a CUDA device" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is seen: cuda is allowed here")
def test_cuda_is_refused_in_one_line_where_torch_sees_no_gpu(tmp_path, small_csv):
    for command in ("check", "run"):
        result = CliRunner().invoke(
            main,
            [command, str(pipeline(tmp_path / "p.toml", small_csv, 'device = "cuda"'))]
            + (["--out", str(tmp_path / "run")] if command == "run" else []),
        )
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert 'training.device: "cuda" but torch sees no CUDA GPU here' in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_exports_from_a_cpu_fp32_copy(tmp_path, small_csv, precision):
    run = tmp_path / precision
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(pipeline(tmp_path / "p.toml", small_csv, f'epochs = 2\ndevice = "cuda"\nprecision = "{precision}"')),
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["device"] == "cuda" and json.loads((run / "parity.json").read_text())["passed"]


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_write_one_run_directory(tmp_path, small_csv):
    """`seqpipe run --nproc 2` (torchrun, DDP over gloo): one run directory, written by rank 0, done and
    parity-checked."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqpipe",
            "run",
            str(pipeline(tmp_path / "p.toml", small_csv, "epochs = 3\npatience = 5")),
            "--out",
            str(run),
            "--nproc",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2 and metrics["training"]["epochs_run"] == 3
    assert status(run)["state"] == "done" and json.loads((run / "parity.json").read_text())["passed"]
    assert proc.stderr.count("run directory") == 1 and proc.stdout.count("test metrics:") == 1  # rank 0 alone reports
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["run"]  # no other rank wrote anything
    lines = (run / "history.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one record per epoch, not one per rank


def test_a_mistake_under_nproc_is_one_line_from_the_launcher_before_any_rank_starts(tmp_path, small_csv):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        pipeline(tmp_path / "p.toml", small_csv, "epochs = 1").read_text().replace("hidden_size", "hiden_size")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(bad), "--nproc", "2", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        "model.hiden_size: unknown key (did you mean 'hidden_size'?)" in proc.stderr and not (tmp_path / "run").exists()
    )


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_line_and_the_launchers(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 1", "parity_tolerance = 1e-30")
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(p), "--out", str(run), "--nproc", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "(torch and it differ by " in errors[0]
    assert errors[1].startswith("error: seqpipe run --nproc 2: rank 0 ended with exit code 1 (its message is above)")
    assert status(run)["state"] == "failed"


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_names_the_resume_command_once(tmp_path, small_csv):
    run = tmp_path / "run"
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 10000\npatience = 10000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(p), "--out", str(run), "--nproc", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300
    while not ((run / "trainer_state.json").is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = [line for line in err.splitlines() if not line.startswith("epoch")]
    assert last[-1] == f"interrupted; continue from the last complete epoch with: seqpipe run --resume {run} --nproc 2"
    assert sum(line.startswith(("interrupted", "terminated")) for line in last) == 1 and "Traceback" not in err
    assert status(run)["state"] == "interrupted"
    assert not [pid for pid in workers if "seqpipe" in cmdline(pid)]  # no rank left behind


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # gone
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so a
    process group does not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's workers through /proc")
def test_a_killed_two_process_run_resumed_ends_bit_identical_to_an_uninterrupted_one(tmp_path, small_csv):
    """Every process of a 2-rank gloo job killed with SIGKILL after a complete epoch, then
    `seqpipe run --resume RUN --nproc 2`: the weights of the job never stopped, bit for bit."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # dropout on every rank exercises each rank's own saved random state; EMA and lr_decay the shared state
    p = pipeline(tmp_path / "p.toml", small_csv, "epochs = 5\npatience = 100\nlr_decay = 0.7\nema_decay = 0.9")
    p.write_text(p.read_text().replace("embedding_size = 8", "embedding_size = 8\ndropout = 0.2"))
    seqpipe = [sys.executable, "-m", "seqpipe", "run"]
    whole = subprocess.run(
        [*seqpipe, str(p), "--out", str(tmp_path / "whole"), "--nproc", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*seqpipe, str(p), "--out", str(run), "--nproc", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 300
    while not (
        (run / "trainer_state.json").is_file() and json.loads((run / "trainer_state.json").read_text())["epoch"] >= 2
    ):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((run / "trainer_state.json").read_text())
    assert killed_at["epoch"] < 5 and killed_at["processes"] == 2 and status(run)["state"] == "running"

    resumed = subprocess.run(
        [*seqpipe, "--resume", str(run), "--nproc", "2"], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {killed_at['epoch']}" in resumed.stderr and status(run)["state"] == "done"
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "metrics.json").read_text())["training"]["processes"] == 2


def test_epochs_are_written_for_tensorboard_when_it_is_installed(tmp_path, small_csv):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(pipeline(tmp_path / "p.toml", small_csv, "epochs = 2")), "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    history = json.loads((run / "metrics.json").read_text())["training"]["history"]
    assert [e.step for e in events.Scalars("validation/macro_f1")] == [1, 2]
    assert [round(e.value, 5) for e in events.Scalars("train/loss")] == [round(r["train_loss"], 5) for r in history]


def test_a_running_status_is_judged_vanished_only_when_its_process_is_gone_from_this_machine():
    """`predict` calls a `running` run vanished only when this machine can tell: its pid is gone, or
    reused by a process started at another time; a run recorded on another host (a shared disk) is
    not judged."""
    from seqpipe.processes import this_process
    from seqpipe.runstate import vanished

    me = {"state": "running", **this_process()}
    assert not vanished(me)  # this process: alive
    assert vanished({**me, "started": "0"})  # the same pid, another process (a restarted container's pid 1)
    assert not vanished({**me, "host": me["host"] + "-elsewhere"})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    assert vanished({**me, "pid": int(dead)})
    assert not vanished({**me, "pid": int(dead), "state": "interrupted"})  # said as interrupted, not as vanished
    assert not vanished({"state": "running", "pid": int(dead)})  # written before hosts were recorded
