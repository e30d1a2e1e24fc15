"""One run, start to finish: resolve → data → model → train → evaluate → export → parity → report."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from seqpipe.assembly import resolve_pipeline
from seqpipe.baselines import against_baselines, describe_comparison
from seqpipe.errors import ParityError, SeqpipeError
from seqpipe.registry import Registry


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    parity: dict
    files: list[Path]
    predict_example: str  # arguments for `seqpipe predict RUN …`, shown after a run


def run_pipeline(
    pipeline: Path | None,
    registry: Registry,
    run_dir_arg: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    resume: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    allow_changes: Sequence[str] = (),
) -> RunResult | None:
    """Run ``pipeline`` into a new run directory, or with ``resume`` (a run directory), continue
    that run from its last complete epoch with the run directory's own pipeline file; ``allow_changes``
    names keys of :data:`~seqpipe.resumed.SAFE_CHANGES` that file may have changed since. ``on_epoch``
    sees each epoch's record (see :func:`seqpipe.training.train`). Under torchrun every rank calls
    this; rank 0 holds the run directory's lock, writes it and returns its result, the other ranks
    train and return None."""
    # model code (torch) is imported here, not at CLI import time, so `seqpipe predict` never pays for it
    import torch

    from seqpipe.assembly import training_device
    from seqpipe.distributed import ranks_from_environment, start, stop
    from seqpipe.resumed import changes_allowed
    from seqpipe.rundir import locked, machine_fault, make_run_dir
    from seqpipe.training import seed_everything, train

    started = time.perf_counter()
    ranks = ranks_from_environment()  # one process, or one rank of a torchrun job
    with contextlib.ExitStack() as held:
        if resume is not None and ranks.main:  # before anything is read: a second --resume is refused, never run twice
            held.enter_context(locked(resume, "--resume"))
        resolved = resolve_run(pipeline, registry, resume)
        pipeline = resolved.path
        cfg = resolved.config
        if ranks.distributed and on_epoch is not None:
            raise SeqpipeError("seqpipe tune runs each trial in one process; drop torchrun / --nproc for it.")
        device = torch.device(training_device(cfg.training.device, f"{resolved.path}: training.device"))
        seed_everything(cfg.training.seed, cfg.training.threads)
        # bad data and plugin code that cannot build the model fail here, before a run directory exists
        task, sizes, monitor = resolved.prepare()
        config = resolved.as_dict()  # with the training budget fitted to the data where the pipeline left it unset
        if (
            resume is not None
        ):  # a changed pipeline file (or changed defaults) is refused unless the key is safe and allowed
            config = changes_allowed(resume, config, allow_changes)
        model = resolved.build_model(task)  # with a first batch's loss: a plugin's fault, before a run directory exists
        if not ranks.main:  # ranks share the model's initial weights and the data order, not their dropout masks
            torch.manual_seed(cfg.training.seed + ranks.rank)
            start(ranks, device)
            try:
                # with --resume, every rank restores its state from the run directory (rank 0 alone writes it)
                train(
                    task,
                    model,
                    cfg.training,
                    Path(os.devnull),
                    log=lambda line: None,
                    monitor=monitor,
                    ranks=ranks,
                    device=device,
                    run_dir=resume,
                    resume=resume is not None,
                )
            finally:
                stop(ranks)
            return None
        run_dir = resume if resume is not None else make_run_dir(run_dir_arg, pipeline, force)
        if resume is None:
            held.enter_context(locked(run_dir))  # --force into a directory another run is writing: refused
        start(ranks, device)
        try:
            return _train_and_export(
                resolved,
                task,
                sizes,
                monitor,
                model,
                config,
                run_dir,
                resume is not None,
                device,
                ranks,
                log,
                on_epoch,
                started,
            )
        except OSError as exc:  # disk full, permission denied, a read-only folder: one line, the run marked failed
            fault = machine_fault(exc, run_dir)
            if fault is None:
                raise
            raise fault from None


def _train_and_export(
    resolved,
    task,
    sizes,
    monitor,
    model,
    config,
    run_dir: Path,
    resuming: bool,
    device,
    ranks,
    log: Callable[[str], None],
    on_epoch,
    started: float,
) -> RunResult:
    """Rank 0's part of a run, in its locked run directory: train, evaluate, export, check parity."""
    import torch

    from seqpipe import manifest
    from seqpipe.checkpoint import save_checkpoint
    from seqpipe.distributed import stop
    from seqpipe.exports import export_graphs, is_precision_copy
    from seqpipe.plots import plot_training_curves
    from seqpipe.resume import RESUME_FILE
    from seqpipe.rundir import write_json
    from seqpipe.runstate import status_recorded
    from seqpipe.training import train

    cfg = resolved.config
    with status_recorded(run_dir):  # status.json: running, then done, failed or interrupted
        log(f"seqpipe: run directory {run_dir}")
        if not resuming:
            manifest.start(run_dir)  # from here on, every file seqpipe reads back is recorded with its SHA-256
            shutil.copyfile(resolved.path, run_dir / "pipeline.toml")
        write_json(run_dir / "config.json", config)
        read_from = [
            str(p)
            for p in (resolved.data.path, resolved.data.validation_path, resolved.data.test_path)
            if p is not None
        ]
        log(
            "data: "
            + ", ".join(f"{name} {n}" for name, n in sizes.items())
            + " examples from "
            + " and ".join(read_from)
        )
        for line in resolved.data.account.lines():
            log(f"data: {line}")
        for note in resolved.notes:
            log(note)
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"model: {cfg.model.cell} cell, {cfg.model.topology} topology, hidden {cfg.model.hidden_size}, "
            f"{n_params:,} parameters"
        )
        log(
            f"training on {device.type}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
            + (
                f", {ranks.world} processes (DistributedDataParallel, {'nccl' if device.type == 'cuda' else 'gloo'})"
                if ranks.distributed
                else ""
            )
            + f", {cfg.training.precision}"
        )

        checkpoint = run_dir / "model.safetensors"
        try:
            with resolved.plugin_code(
                "training", training=True
            ):  # batches, loss, validation: a plugin's fault in one line
                history = train(
                    task,
                    model,
                    cfg.training,
                    checkpoint,
                    log=log,
                    monitor=monitor,
                    history_path=run_dir / "history.jsonl",
                    run_dir=run_dir,
                    resume=resuming,
                    on_epoch=on_epoch,
                    ranks=ranks,
                    device=device,
                )
        finally:
            stop(ranks)  # the other ranks are done; evaluation and export are rank 0's alone
        save_checkpoint(
            model, checkpoint, metadata={"task": cfg.task.name}
        )  # no paths or times: the same training, the same file
        evaluation_started = time.perf_counter()
        with resolved.plugin_code("evaluating", training=True):
            metrics = {split: task.evaluate(model, split) for split in task.splits}  # with the baselines the task fits
        evaluated = time.perf_counter() - evaluation_started
        metrics["data"] = {
            "examples": sizes,
            "left_out": dict(resolved.data.account.counts),
            "left_out_described": resolved.data.account.lines(),
        }
        metrics["training"] = {
            "device": device.type,
            "processes": ranks.world,
            "precision": cfg.training.precision,
            "monitor": monitor[0],
            "monitor_mode": monitor[1],
            "epochs_run": len(history),
            "best_epoch": max(r["epoch"] for r in history if r["best"]),
            "seconds": round(sum(r["seconds"] for r in history), 2),  # the epochs' own time, as in trainer_state.json
            "evaluation_seconds": round(evaluated, 2),
            "run_seconds": round(time.perf_counter() - started, 2),
            "history": history,
        }
        # picked by loss, the run is still judged against the baselines on the task's own metric
        trivial = task.trivial_baselines
        metric, mode = monitor
        comparison = against_baselines(metrics["test"], metric, mode, trivial) or against_baselines(
            metrics["test"], task.monitor, task.monitor_mode, trivial
        )
        if comparison is not None:
            metrics["against_baselines"] = comparison
        write_json(run_dir / "metrics.json", metrics)
        plot_training_curves(
            history,
            monitor[0] if monitor[0] != "loss" else task.monitor,
            run_dir / "training_curves.png",
            monitor=monitor[0],
        )
        log("test: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items() if isinstance(v, float)))
        if comparison is not None:
            log(describe_comparison(comparison))

        with resolved.plugin_code("exporting", training=True):
            parity = export_graphs(resolved, task, model, run_dir / "onnx", log)
        write_json(run_dir / "parity.json", parity)
        with resolved.plugin_code("writing its results", training=True):
            extra = task.write_report(model, run_dir, log)  # task-specific results: plots, samples
        if extra:
            metrics.update(extra)
            write_json(run_dir / "metrics.json", metrics)
        files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))  # not the lock
        if not parity["passed"]:
            failed = [(kind, r) for kind, r in parity["graphs"].items() if not r["passed"]]
            said = "; ".join(
                f"{r['file']} ({'its fp32 original' if is_precision_copy(kind) else 'torch'} and it differ by "
                f"{r['max_scaled_diff']:.2e} > {r['tolerance']:g})"
                for kind, r in failed
            )
            raise ParityError(
                f"{run_dir / 'parity.json'}: parity failed, scaled by magnitude beyond 1: {said}; do not serve "
                f"{', '.join(r['file'] for _, r in failed)} (see parity.json)."
            )
    (run_dir / RESUME_FILE).unlink(missing_ok=True)  # done: nothing left to resume (trainer_state.json stays, to read)
    manifest.forget(run_dir / RESUME_FILE)
    files = [f for f in files if f.name != RESUME_FILE] + _report(run_dir, log)
    return RunResult(run_dir, metrics, parity, sorted(files), task.predict_example)


def _report(run_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """Render ``report.html`` once the run is done (status.json says so, and the report shows it): the
    report is a view of files already written, so a failure to render it is said in one line with
    the command that renders it again, and the finished model is kept and served as it is."""
    from seqpipe.report import write_report

    try:
        path = write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - any bug or disk fault in the view must not fail a finished run
        log(
            f"report: could not write {run_dir / 'report.html'} ({type(exc).__name__}: {exc}); the run is done; "
            f"render it again with: seqpipe report {run_dir}"
        )
        return []
    log(f"report: {path}")
    return [path]


def resolve_run(pipeline: Path | None, registry: Registry, resume: Path | None):
    """The pipeline a run trains: ``pipeline``, or with ``resume`` the run directory's own copy, its
    data paths read relative to the original pipeline's folder."""
    if resume is None:
        assert pipeline is not None  # the CLI asks for one of the two
        return resolve_pipeline(pipeline, registry)
    pipeline, data_folder = resumable(resume)
    return resolve_pipeline(pipeline, registry, data_relative_to=data_folder)


def resumable(run_dir: Path) -> tuple[Path, Path]:
    """The run directory's pipeline file and its data folder, if the run can be resumed."""
    import json

    from seqpipe import manifest
    from seqpipe.errors import RunDirectoryError
    from seqpipe.resume import RESUME_FILE
    from seqpipe.runstate import read_status

    status = read_status(run_dir)
    if status is None or not (run_dir / "pipeline.toml").is_file():
        raise RunDirectoryError(
            f"--resume {run_dir}: not a seqpipe run directory (no status.json or pipeline.toml); pass the "
            "directory a `seqpipe run` wrote."
        )
    if status.get("state") == "done":
        raise RunDirectoryError(
            f"--resume {run_dir}: this run is done; nothing to resume (start a new run with seqpipe run)."
        )
    again = f"start it again: seqpipe run {run_dir / 'pipeline.toml'} --out {run_dir} --force"
    if not (run_dir / RESUME_FILE).is_file():
        raise RunDirectoryError(
            f"--resume {run_dir}: no epoch finished before the run stopped, so there is nothing to continue; {again}"
        )
    for name in (RESUME_FILE, "config.json", "model.safetensors"):  # everything resuming reads back, before it is read
        if name != "model.safetensors" or (run_dir / name).exists():
            manifest.verify(run_dir / name, run_dir, fix=again)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return run_dir / "pipeline.toml", Path(config["data"]["relative_to"])
