"""`seqpipe tune`: a [tune] space validated like every other key, trials that are normal runs, a
study in SQLite that continues after a kill with every trial recorded once, and a best pipeline
that reproduces its score when run with `seqpipe run`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from seqpipe.cli import main

optuna = pytest.importorskip("optuna")


def _data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(240):
        x = rng.normal(size=(int(rng.integers(2, 7)), 2)) + [rng.choice([-0.7, 0.7]), 0.0]
        rows.append({"x": np.round(x, 3).tolist(), "label": "up" if x[:, 0].mean() > 0 else "down"})
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _pipeline(folder: Path, space: str, trials: int = 6) -> Path:
    _data(folder)
    path = folder / "p.toml"
    path.write_text(
        '[data]\npath = "d.jsonl"\n[input]\nkind = "numbers"\ncolumn = "x"\n[model]\nhidden_size = 8\n'
        "[training]\nepochs = 4\nbatch_size = 32\n[export]\nparity_sequences = 16\n"
        f"[tune]\ntrials = {trials}\n[tune.space]\n{space}\n",
        encoding="utf-8",
    )
    return path


SPACE = '"model.hidden_size" = [4, 8, 16]\n"training.learning_rate" = { low = 0.001, high = 0.03, log = true }'


@pytest.mark.parametrize(
    "space,fragment",
    [
        ('"hidden_size" = [4, 8]', "tune: space key 'hidden_size' is not a dotted pipeline key"),
        (
            '"model.cell" = ["gru", "lstmm"]',
            "tune.space.\"model.cell\" = 'lstmm' makes an invalid pipeline: model.cell: unknown cell 'lstmm'",
        ),
        (
            '"training.learning_rate" = { low = 0.1, high = 0.01 }',
            "space key 'training.learning_rate': range: low (0.1) must be below high (0.01)",
        ),
        (
            '"training.batch_size" = { low = 0, high = 64 }',
            'tune.space."training.batch_size" = 0 makes an invalid pipeline',
        ),
    ],
)
def test_a_bad_search_space_is_one_line_before_any_trial(tmp_path, space, fragment):
    result = CliRunner().invoke(main, ["tune", str(_pipeline(tmp_path, space)), "--out", str(tmp_path / "study")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not any((tmp_path / "study").glob("trial-*"))


def _finished(db: Path) -> list[int]:
    """The numbers of the finished trials, read with sqlite3 alone: opening the study with optuna
    while the tune process creates it would race optuna's own table creation. (Not read-only: a
    process killed mid-write leaves a journal that only a writable connection rolls back.)"""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            rows = connection.execute("SELECT number FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchall()
    except sqlite3.OperationalError:  # the tables are not created yet
        return []
    return [number for (number,) in rows]


def _study_error(db: Path) -> str:
    """Why the study in ``db`` cannot be read (for a failure message), or "readable"."""
    try:
        optuna.load_study(study_name="seqpipe", storage=f"sqlite:///{db}")
    except Exception as exc:  # noqa: BLE001 - said, not handled
        return f"{type(exc).__name__}: {exc}"
    return "readable"


@pytest.mark.slow
def test_a_killed_study_continues_and_its_best_pipeline_reproduces_its_score(tmp_path):
    pipeline = _pipeline(tmp_path, SPACE, trials=6)
    study_dir = tmp_path / "study"
    command = [sys.executable, "-m", "seqpipe", "tune", str(pipeline), "--out", str(study_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while len(_finished(study_dir / "study.db")) < 3 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    ended_itself = first.poll()
    first.send_signal(signal.SIGKILL)  # halfway, most likely inside a trial
    _, said = first.communicate()
    assert 3 <= len(_finished(study_dir / "study.db")) < 6, (
        f"first study process (exit {ended_itself}) said:\n{said[-3000:]}\nreading the study: "
        f"{_study_error(study_dir / 'study.db')}"
    )
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="seqpipe", storage=f"sqlite:///{study_dir / 'study.db'}")
    finished = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6 and len({t.number for t in finished}) == 6  # each trial recorded once
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.get_trials())  # nothing left "running"
    assert (study_dir / "trials.png").read_bytes()[:4] == b"\x89PNG"
    best = study.best_trial
    rerun = CliRunner().invoke(main, ["run", str(study_dir / "best.toml"), "--out", str(tmp_path / "best-run")])
    assert rerun.exit_code == 0, rerun.output
    metrics = json.loads((tmp_path / "best-run" / "metrics.json").read_text())
    assert metrics["validation"]["macro_f1"] == pytest.approx(best.value, abs=1e-9)  # runs are deterministic on CPU
    assert json.loads((study_dir / f"trial-{best.number:03d}" / "run" / "status.json").read_text())["state"] == "done"


@pytest.mark.slow
@pytest.mark.parametrize("another_process_runs", [False, True])
def test_a_trial_killed_before_it_recorded_its_process_is_not_taken_for_a_live_one(
    tmp_path, monkeypatch, another_process_runs
):
    """optuna creates a trial (running) before the objective records its owner: a process killed in
    between leaves an ownerless trial, which must not count toward the target as someone's. While
    another process of the study runs, it might be that one's for an instant: the study waits to
    know (here 15 s instead of a minute), then records it as failed and reaches the target."""
    monkeypatch.setattr("seqpipe.tuning.OWNERLESS_SECONDS", 15 if another_process_runs else 3)
    pipeline = _pipeline(tmp_path, SPACE, trials=2)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    leave = (
        "import sys, optuna; from seqpipe.tuning import _record_process\n"
        "study = optuna.create_study(study_name='seqpipe', storage=sys.argv[1], direction='maximize')\n"
        "if len(sys.argv) > 2: study.set_user_attr('process other', {'host': sys.argv[2], 'pid': int(sys.argv[3]), "
        "'started': None})\n"
        "_record_process(study); study.ask()  # then the process ends, as if killed: no owner, no values\n"
    )
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) as other:
        try:
            alive = [socket.gethostname(), str(other.pid)] if another_process_runs else []
            subprocess.run([sys.executable, "-c", leave, f"sqlite:///{study_dir / 'study.db'}", *alive], check=True)
            result = CliRunner().invoke(main, ["tune", str(pipeline), "--out", str(study_dir)])
        finally:
            other.kill()
    assert result.exit_code == 0, result.output
    assert "trial 0: interrupted as it started; recorded as failed" in result.output
    study = optuna.load_study(study_name="seqpipe", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE", "COMPLETE"]
    # alone, the ownerless trial is killed at once; beside another live process it was undecided,
    # so it was recorded failed only after the first new trial finished (the census between trials)
    failed, first = study.get_trials()[:2]
    assert (failed.datetime_complete > first.datetime_complete) == another_process_runs


@pytest.mark.slow
def test_trials_in_two_processes_share_the_study_and_each_is_recorded_once(tmp_path):
    """`--jobs 2`: two processes take trials from one study at once; neither takes the other's
    running trial for a killed one, and the target is reached with every trial recorded once."""
    pipeline = _pipeline(tmp_path, SPACE, trials=10)  # enough that the second process, starting later, gets some
    study_dir = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "tune", str(pipeline), "--out", str(study_dir), "--jobs", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes share the study" in proc.stderr and "interrupted earlier" not in proc.stderr
    study = optuna.load_study(study_name="seqpipe", storage=f"sqlite:///{study_dir / 'study.db'}")
    trials = study.get_trials()
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [t.state.name for t in trials]
    assert 10 <= len(trials) <= 11  # the target, and at most one more a worker had started as the last finished
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert len(owners) == 2  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no values tried twice
    assert sorted(p.name for p in study_dir.glob("trial-*")) == [f"trial-{t.number:03d}" for t in trials]
    assert (study_dir / "best.toml").is_file()


def test_a_running_trial_counts_as_killed_only_when_its_process_is_gone():
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from seqpipe.processes import this_process
    from seqpipe.tuning import GONE, LIVE, UNDECIDED, _judge

    def trial(owner=None, started=datetime.now()):
        return SimpleNamespace(user_attrs={} if owner is None else {"owner": owner}, datetime_start=started)

    me = this_process()
    alone = [me]  # the processes recorded on the study: this one only
    assert _judge(trial(me), alone) == LIVE  # this process is alive: its trial is its own to finish
    assert (
        _judge(trial({**me, "started": "0"}), alone) == GONE
    )  # the same pid, another process (a restarted container's pid 1)
    assert _judge(trial({**me, "host": me["host"] + "-earlier"}), alone) == GONE  # a SQLite study lives on one machine
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    dead = {**me, "pid": int(dead), "started": None}
    assert _judge(trial(dead), alone) == GONE
    # a trial that has no owner yet: created by a process killed before it recorded itself, unless
    # another process of the study still runs, and then for a minute at most
    assert _judge(trial(), alone) == GONE and _judge(trial(), [me, dead]) == GONE
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            alive = {**me, "pid": other.pid, "started": None}
            assert _judge(trial(), [me, dead, alive]) == UNDECIDED
            assert _judge(trial(started=datetime.now() - timedelta(minutes=5)), [me, alive]) == GONE
        finally:
            other.kill()
