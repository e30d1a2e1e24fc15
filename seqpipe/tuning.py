"""``seqpipe tune``: search a pipeline's ``[tune] space`` with Optuna, each trial a normal run.

A trial is the pipeline file with the trial's values set, written into the study folder and run
by :func:`seqpipe.run.run_pipeline` like any other (trained, evaluated, exported, parity-checked);
its score is the validation metric of its best epoch, reported to Optuna after every epoch so the
median pruner can stop a trial that is behind (its run directory then says ``stopped``). The study
lives in ``study.db`` (SQLite): a study that was interrupted continues where it stopped, a trial
killed halfway is recorded as failed and its values are tried again, and finished trials are
never re-run. At the end the best pipeline is written as ``best.toml`` (the pipeline file with the
best values, without ``[tune]``) and the trials are drawn in ``trials.png``.

Trials run in parallel with ``--jobs N``: N worker processes share the study (``seqpipe tune``
itself, started with ``--worker``), each taking the next trial until the target is reached, with
the machine's cores shared among them. Every trial records the process running it, so a trial is
taken for killed only when that process is gone, never while another worker runs it; the same
holds for two ``seqpipe tune`` commands started by hand on one study folder.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from seqpipe.config import Range, format_pipeline, load_pipeline, parse_toml
from seqpipe.errors import ConfigError, SeqpipeError
from seqpipe.processes import process_ended, this_process
from seqpipe.registry import Registry

STUDY_FILE = "study.db"
STUDY_NAME = "seqpipe"


@dataclass
class TuneResult:
    folder: Path
    best_value: float
    best_params: dict[str, Any]
    best_pipeline: Path
    finished: int  # trials complete or pruned
    pruned: int
    rerun: int  # trials whose process was killed, recorded as failed by this process and their values tried again


def with_values(tables: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The pipeline ``tables`` with each dotted key of ``values`` set, and no ``[tune]`` table."""
    out = copy.deepcopy(tables)
    out.pop("tune", None)
    for dotted, value in values.items():
        *path, last = dotted.split(".")
        table = out
        for part in path:
            table = table.setdefault(part, {})
        table[last] = value
    return out


def _suggest(trial: Any, key: str, space: list[Any] | Range) -> Any:
    if isinstance(space, list):
        return trial.suggest_categorical(key, space)
    integral = (
        float(space.low).is_integer()
        and float(space.high).is_integer()
        and (space.step is None or float(space.step).is_integer())
    )
    if integral:
        return trial.suggest_int(key, int(space.low), int(space.high), step=int(space.step or 1), log=space.log)
    return trial.suggest_float(key, space.low, space.high, step=space.step, log=space.log)


def _corners(space: dict[str, list[Any] | Range]) -> list[dict[str, Any]]:
    """Values that reach every end of the space: each choice, and each range's low and high."""
    corners = []
    for key, spec in space.items():
        for value in spec if isinstance(spec, list) else [spec.low, spec.high]:
            if isinstance(spec, Range) and float(spec.low).is_integer() and float(spec.high).is_integer():
                value = int(value)
            corners.append({key: value})
    return corners


def check_space(
    pipeline: Path, space: dict[str, list[Any] | Range], tables: dict[str, Any], registry: Registry, folder: Path
) -> None:
    """Every choice and range end makes a valid pipeline (names, options and their ranges), so a bad
    space fails before the first trial, as one line naming the key."""
    from seqpipe.assembly import resolve_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".space-check.toml"
    try:
        for values in _corners(space):
            ((key, value),) = values.items()
            probe.write_text(
                format_pipeline(_data_from(with_values(tables, values), pipeline.parent)), encoding="utf-8"
            )
            try:
                resolve_pipeline(probe, registry)
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise ConfigError(
                    f'{pipeline}: tune.space."{key}" = {value!r} makes an invalid pipeline: {reason}'
                ) from None
    finally:
        probe.unlink(missing_ok=True)


PROCESS_KEY = "process "  # a study user attribute per process that worked on it: "process <host> <pid> <start>"
OWNERLESS_SECONDS = 60  # a trial still without an owner this long after it started lost its process
LIVE, GONE, UNDECIDED = "live", "gone", "undecided"


def _record_process(study: Any) -> None:
    """Record this process on the study before it creates any trial: optuna creates a trial
    (running) before the objective can record its owner, and a process killed in between leaves an
    ownerless trial that :func:`_judge` judges by the study's other live processes."""
    me = this_process()
    study.set_user_attr(f"{PROCESS_KEY}{me['host']} {me['pid']} {me['started']}", me)


def _processes(study: Any) -> list[dict[str, Any]]:
    return [record for key, record in study.user_attrs.items() if key.startswith(PROCESS_KEY)]


def _judge(trial: Any, processes: list[dict[str, Any]]) -> str:
    """Whether a trial still marked running is ``LIVE`` (its process runs: someone else's to
    finish) or ``GONE`` (its process was killed). A SQLite study lives on one machine, so a trial
    recorded under another host name was left by an earlier container or boot. A trial with no
    owner yet was created an instant before its process records itself, or that process was killed
    in between: ``UNDECIDED`` while another process of the study (``processes``, read after the
    trial) still runs, for a minute at most; ``GONE`` otherwise. The caller has no trial of its
    own running."""
    owner = trial.user_attrs.get("owner")
    if owner is not None:
        return LIVE if process_ended(owner) is False else GONE  # None: another host's, an earlier container's or boot's
    started, me = trial.datetime_start, this_process()
    if started is None or (datetime.now() - started).total_seconds() > OWNERLESS_SECONDS:
        return GONE
    return UNDECIDED if any(process_ended(p) is False for p in processes if p != me) else GONE


def _record_killed(study: Any, trial: Any, log: Callable[[str], None]) -> bool:
    """Record a trial whose process is gone as failed and queue its values to be tried again;
    whether this process did (another may have recorded it first)."""
    from optuna.trial import TrialState

    try:
        study.tell(trial.number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):  # another process recorded it at the same moment
        return False
    if not trial.params:  # killed before it drew its values: nothing to try again
        log(f"trial {trial.number}: interrupted as it started; recorded as failed")
        return False
    study.enqueue_trial(trial.params, skip_if_exists=False)
    log(f"trial {trial.number}: interrupted earlier; recorded as failed, its values are tried again")
    return True


def _start_workers(
    pipeline: Path, folder: Path, target: int, jobs: int, threads: int, strict_plugins: bool
) -> list[subprocess.Popen]:
    """``jobs - 1`` more ``seqpipe tune --worker`` processes on this study (this process is the
    first), each with ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "seqpipe",
        "tune",
        str(pipeline),
        "--out",
        str(folder),
        "--trials",
        str(target),
    ] + (["--strict-plugins"] if strict_plugins else [])
    return [subprocess.Popen([*command, "--worker", str(index)], env=env) for index in range(1, jobs)]


def _stop(workers: list[subprocess.Popen], interrupted: bool) -> None:
    """Stop the worker processes with this one: after a Ctrl-C they got the terminal's SIGINT too,
    so they have a moment to stop on their own (a second one would land in their way out)."""
    if interrupted:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.poll() is None for p in workers):
            time.sleep(0.1)
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)


def tune(
    pipeline: Path,
    registry: Registry,
    folder: Path,
    trials: int | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    jobs: int = 1,
    worker: int | None = None,
    strict_plugins: bool = False,
) -> TuneResult | None:
    """Run (or continue) the study of ``pipeline``'s ``[tune]`` table in ``folder``; with ``jobs``,
    in that many processes. ``worker`` (its index, from 1): a process started by another that only
    runs trials (the other checked the space, and reports); it returns None."""
    try:
        import optuna
    except ImportError:
        raise SeqpipeError('seqpipe tune needs Optuna: pip install "seqpipe[tune]" (or pip install optuna).') from None
    from optuna.trial import TrialState

    from seqpipe.assembly import resolve_pipeline
    from seqpipe.run import run_pipeline
    from seqpipe.runstate import Stopped, signalled

    config = load_pipeline(pipeline)
    if config.tune is None:
        raise ConfigError(
            f"{pipeline}: no [tune] table; add one with the search space, e.g. [tune.space] "
            '"model.hidden_size" = [32, 64, 128].'
        )
    tables = parse_toml(pipeline)
    target = trials or config.tune.trials
    if worker is None:
        check_space(pipeline, config.tune.space, tables, registry, folder)
    resolved = resolve_pipeline(pipeline, registry)
    monitor = config.tune.metric or config.training.monitor or resolved.task.obj.monitor
    modes = resolved.task.obj.declared_metrics()
    if monitor not in modes:
        raise ConfigError(
            f"{pipeline}: tune.metric: task '{config.task.name}' reports no validation metric '{monitor}'; "
            f"choose one of {', '.join(sorted(modes))}."
        )
    direction: Literal["maximize", "minimize"] = "maximize" if modes[monitor] == "max" else "minimize"

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial stopped by Ctrl-C is reported in seqpipe's own line
    # workers write the study at once: SQLite makes a writer wait for the lock instead of failing at once
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(folder / STUDY_FILE).resolve()}", engine_kwargs={"connect_args": {"timeout": 120}}
    )
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction=direction,
        load_if_exists=True,
        # each worker draws its own values: the same seed would make them try the same first ones
        sampler=optuna.samplers.TPESampler(seed=config.tune.seed + (worker or 0)),
        # a trial is judged from the epoch early stopping would first judge it (patience), never before the 2nd
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(2, config.training.patience))
        if config.tune.prune
        else optuna.pruners.NopPruner(),
    )
    _record_process(study)
    rerun = 0

    def finished() -> list[Any]:
        return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def census() -> tuple[int, int, int]:
        """Finished trials, trials running in a live process (this one's or another's) or about to
        (undecided), and undecided ones; a running trial whose process is gone is recorded as
        failed on the way, its values queued again."""
        nonlocal rerun
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        processes = _processes(study)  # read after the trials: a process records itself before it creates one
        verdicts = [(trial, _judge(trial, processes)) for trial in running]
        rerun += sum(_record_killed(study, trial, log) for trial, verdict in verdicts if verdict == GONE)
        undecided = sum(verdict == UNDECIDED for _, verdict in verdicts)
        return len(finished()), sum(verdict != GONE for _, verdict in verdicts), undecided

    done = len(finished())
    if done and worker is None:
        log(f"study {folder / STUDY_FILE}: {done} of {target} trials already finished; continuing")
    threads = max(1, (os.cpu_count() or 1) // jobs)  # the cores shared among all the processes
    workers = (
        _start_workers(pipeline, folder, target, jobs, threads, strict_plugins) if jobs > 1 and worker is None else []
    )
    if workers:
        import torch

        torch.set_num_threads(threads)  # this process takes its share too: more threads than cores stall them all
        log(f"{jobs} processes share the study ({threads} torch thread(s) each)")

    space = config.tune.space  # the objective's closure: config.tune is known to be there

    def objective(trial: Any) -> float:
        trial.set_user_attr("owner", this_process())
        values = {key: _suggest(trial, key, spec) for key, spec in space.items()}
        trial_dir = folder / f"trial-{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial_pipeline = trial_dir / "pipeline.toml"
        trial_pipeline.write_text(
            format_pipeline(_data_from(with_values(tables, values), pipeline.parent)), encoding="utf-8"
        )

        def report(record: dict) -> None:
            trial.report(record["validation"][monitor], record["epoch"])
            if trial.should_prune():
                raise Stopped(
                    f"pruned by seqpipe tune after epoch {record['epoch']}: validation {monitor} "
                    f"{record['validation'][monitor]:.4f} is behind the median of earlier trials"
                )

        shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        try:
            result = run_pipeline(
                trial_pipeline, registry, str(trial_dir / "run"), force=True, log=lambda line: None, on_epoch=report
            )
        except Stopped:
            log(f"trial {trial.number}: {shown} → pruned")
            raise optuna.TrialPruned() from None
        assert result is not None  # run_pipeline returns None only to a DDP worker rank, never here
        value = float(result.metrics["validation"][monitor])
        log(f"trial {trial.number}: {shown} → validation {monitor} {value:.4f}")
        return value

    try:
        while True:
            done, running, undecided = census()
            if done + running < target:
                study.optimize(objective, n_trials=1, catch=())
            elif undecided:  # it becomes another process's trial, or a killed one to run again: wait to know
                time.sleep(0.5)
            else:
                break
    except BaseException as exc:
        pending = signalled()
        _stop(workers, pending is KeyboardInterrupt)
        if pending is None:
            raise
        # a Ctrl-C or SIGTERM, whatever optuna made of it on its way out of a trial; the study
        # continues by running the same command again
        stopped = exc if isinstance(exc, pending) else pending()
        setattr(stopped, "resume_command", f"seqpipe tune {pipeline} --out {folder}")  # the CLI's one line names it
        setattr(stopped, "resume_what", "the study")
        raise stopped from None
    finally:
        for process in workers:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if worker is not None:
        return None
    failed = [p.returncode for p in workers if p.returncode]
    if failed:
        raise SeqpipeError(
            f"{folder / STUDY_FILE}: {len(failed)} of {jobs - 1} worker processes failed (exit code {failed[0]}; "
            "their message is above); run the same command again to continue the study."
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SeqpipeError(f"{folder / STUDY_FILE}: every trial was pruned; run more trials or set tune.prune = false.")
    best = study.best_trial
    best_pipeline = folder / "best.toml"
    best_pipeline.write_text(
        f"# seqpipe tune: best of {len(finished())} trials (trial {best.number}), validation {monitor} "
        f"{best.value:.4f}; {pipeline} with the best values\n"
        + format_pipeline(_data_from(with_values(tables, best.params), pipeline.parent)),
        encoding="utf-8",
    )
    _plot(study, monitor, folder / "trials.png")
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    assert best.value is not None  # a finished trial has its value
    return TuneResult(folder, float(best.value), dict(best.params), best_pipeline, len(finished()), pruned, rerun)


def _data_from(tables: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The tables with data paths relative to ``folder`` (the tuned pipeline's) made absolute, so
    trial pipelines and ``best.toml`` run from the study folder."""
    data = tables.get("data", {})
    for key in ("path", "train", "validation", "test"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((folder / data[key]).resolve())
    return tables


def _plot(study: Any, monitor: str, path: Path) -> None:
    """Each finished trial's score in order, and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    better = max if study.direction.name == "MAXIMIZE" else min
    best = [better(values[: i + 1]) for i in range(len(values))]
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(numbers, values, "o", color="tab:blue", label="trial (complete)")
    ax.plot(numbers, best, "-", color="tab:red", label="best so far")
    for t in pruned:
        last = max(t.intermediate_values) if t.intermediate_values else None
        if last is not None:
            ax.plot([t.number], [t.intermediate_values[last]], "x", color="tab:gray")
    if pruned:
        ax.plot([], [], "x", color="tab:gray", label="trial (pruned: its last reported epoch)")
    ax.set(xlabel="trial", ylabel=f"validation {monitor}", title="seqpipe tune")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
