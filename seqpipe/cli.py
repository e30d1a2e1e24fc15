"""The ``seqpipe`` command. Plugins and torch load inside commands, never at import time."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from seqpipe import __version__
from seqpipe.deprecation import say_moved_names
from seqpipe.errors import SeqpipeError
from seqpipe.plugins import SERVING, TRAINING, PluginSource, distribution_info, load_registry
from seqpipe.runstate import Terminated, signals_stop_the_run
from seqpipe.serving.command import predict


class SeqpipeGroup(click.Group):
    """Turns every :class:`SeqpipeError` into one line on stderr and its exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SeqpipeError as exc:
            if ctx.params.get("debug") or os.environ.get("SEQPIPE_DEBUG") == "1":  # the traceback behind the line
                import traceback

                traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
            for line in str(exc).splitlines():  # several faults found at once (pydantic): one line each
                click.echo(f"error: {line}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            _say_stopped("interrupted", exc)
            sys.exit(130)
        except Terminated as exc:
            _say_stopped("terminated", exc)
            sys.exit(143)


def _say_stopped(how: str, exc: BaseException) -> None:
    """One line for a stopped run; in a torchrun job rank 0 alone says it (with the resume command)."""
    if os.environ.get("RANK", "0") == "0":
        click.echo(how + _resume_hint(exc), err=True)


def _resume_hint(exc: BaseException) -> str:
    command = getattr(exc, "resume_command", None)
    what = getattr(exc, "resume_what", "from the last complete epoch")
    return f"; continue {what} with: {command}" if command else ""


def _registry(strict: bool, source: PluginSource = TRAINING):
    return load_registry(strict or None, source=source)


strict_option = click.option(
    "--strict-plugins", is_flag=True, help="Fail if any plugin fails to load (also SEQPIPE_STRICT_PLUGINS=1)."
)
pipeline_argument = click.argument("pipeline", type=click.Path(path_type=Path, dir_okay=False))


@click.group(cls=SeqpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqpipe")
@click.option(
    "--debug", is_flag=True, help="With an error, print the traceback behind its line (also SEQPIPE_DEBUG=1)."
)
def main(debug: bool) -> None:
    """Declarative pipelines for recurrent sequence models: train, export to ONNX, prove parity."""
    say_moved_names()  # a plugin importing a name that moved: one line each, saying where it went


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run directory (default: runs/<pipeline>-<time>).",
)
@click.option("--force", is_flag=True, help="Write into --out even if it is not empty.")
@click.option(
    "--resume",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="RUN_DIR",
    help="Continue the run in RUN_DIR from its last complete epoch, with its own pipeline file (instead of PIPELINE).",
)
@click.option(
    "--allow-changes",
    "allow_changes",
    multiple=True,
    metavar="KEY",
    help="With --resume: continue although the run's pipeline file changed KEY (training.epochs, training.patience, "
    "training.max_minutes or an export key; repeat the option or separate keys by commas).",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train in N processes with DistributedDataParallel (launches torchrun on this machine).",
)
@strict_option
def run(
    pipeline: Path | None,
    out: Path | None,
    force: bool,
    resume: Path | None,
    allow_changes: tuple[str, ...],
    nproc: int,
    strict_plugins: bool,
) -> None:
    """Train, evaluate, export and parity-check the pipeline in PIPELINE."""
    from seqpipe.run import run_pipeline

    if (pipeline is None) == (resume is None) or (resume is not None and (out is not None or force)):
        raise SeqpipeError(
            "seqpipe run: give a PIPELINE file to run, or --resume RUN_DIR alone to continue a stopped run."
        )
    if allow_changes and resume is None:
        raise SeqpipeError(
            "seqpipe run: --allow-changes goes with --resume RUN_DIR (the keys a resumed run's pipeline file changed)."
        )
    registry, _ = _registry(strict_plugins)
    if nproc > 1:
        from seqpipe.launch import check_before_launch, torchrun

        check_before_launch(registry, pipeline, out, force, resume, nproc, allow_changes)
        torchrun(nproc, pipeline, out, force, resume, strict_plugins, allow_changes)
        return
    with signals_stop_the_run():  # Ctrl-C and SIGTERM record 'interrupted' in status.json
        result = run_pipeline(pipeline, registry, out, force, resume=resume, allow_changes=allow_changes)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    click.echo(f"\nrun directory: {result.run_dir}")
    for path in result.files:
        click.echo(f"  {path.relative_to(result.run_dir)}")
    test = result.metrics["test"]
    click.echo("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)))
    click.echo(f"parity: passed (max abs diff {result.parity['max_abs_diff']:.2e})")
    click.echo(f"try: seqpipe predict {result.run_dir} {result.predict_example}")


@main.command()
@pipeline_argument
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Study folder (default: tune/<pipeline>); run the same command again to continue an interrupted study there.",
)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials to finish (default: tune.trials).")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run trials in N processes at once, sharing the study and the machine's cores.",
)
@click.option(
    "--worker", type=click.IntRange(min=1), default=None, hidden=True, help="Run trials only (started by --jobs)."
)
@strict_option
def tune(
    pipeline: Path, out: Path | None, trials: int | None, jobs: int, worker: int | None, strict_plugins: bool
) -> None:
    """Search PIPELINE's [tune] space with Optuna: each trial a normal run, pruned when behind; the
    best pipeline is written as best.toml."""
    from seqpipe.tuning import tune as run_study

    registry, _ = _registry(strict_plugins)
    folder = out or Path("tune") / pipeline.stem
    try:
        with signals_stop_the_run():
            result = run_study(
                pipeline, registry, folder, trials, jobs=jobs, worker=worker, strict_plugins=strict_plugins
            )
    except (KeyboardInterrupt, Terminated) as exc:
        if worker is not None:  # the process that started it says how to continue
            sys.exit(130 if isinstance(exc, KeyboardInterrupt) else 143)
        raise
    if result is None:  # a worker: the process that started it reports
        return
    click.echo(
        f"\nstudy: {folder / 'study.db'} ({result.finished} trials finished, {result.pruned} pruned"
        + (f", {result.rerun} interrupted and tried again" if result.rerun else "")
        + ")"
    )
    click.echo(
        f"best: validation {result.best_value:.4f} with "
        + ", ".join(f"{k} = {v!r}" for k, v in result.best_params.items())
    )
    click.echo(f"best pipeline: {result.best_pipeline}  (seqpipe run {result.best_pipeline})")
    click.echo(f"plot: {folder / 'trials.png'}")


@main.command()
@pipeline_argument
@strict_option
def check(pipeline: Path, strict_plugins: bool) -> None:
    """Validate PIPELINE (syntax, keys, plugin names and options, and the data: every record is read
    and encoded as `run` would; the model is built and one training batch put through it and the
    loss) without training."""
    from seqpipe.assembly import resolve_pipeline

    registry, _ = _registry(strict_plugins)
    resolved = resolve_pipeline(pipeline, registry)
    task, sizes, (monitor, mode) = resolved.prepare()
    model = resolved.build_model(task)  # as run builds it, with one training batch through it and the loss
    m = resolved.config.model
    click.echo(
        f"{pipeline}: ok (task {resolved.config.task.name}, cell {m.cell}, topology {m.topology}, data "
        f"{resolved.data.path})"
    )
    click.echo(
        "data: "
        + ", ".join(f"{name} {n}" for name, n in sizes.items())
        + f" examples; monitor: validation {monitor} ({mode})"
    )
    click.echo(
        f"model: {sum(p.numel() for p in model.parameters()):,} parameters; a first training batch goes through it and "
        "the loss"
    )
    for note in resolved.notes:
        click.echo(note)
    for line in resolved.data.account.lines():
        click.echo(f"data: {line}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def report(run_dir: Path) -> None:
    """Render RUN_DIR/report.html again from the run's files (every run writes it when it is done)."""
    from seqpipe.report import write_report

    click.echo(f"report: {write_report(run_dir)}")


@main.command()
@click.argument("data", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--task",
    help="The task (default: guessed from the columns: a CoNLL file is tagged, a text and a label "
    "column are classified, two text columns are an encoder-decoder, numbers are forecast).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The pipeline file to write (default: the data file's name with .toml, here).",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@strict_option
def init(data: Path, task: str | None, out: Path | None, force: bool, strict_plugins: bool) -> None:
    """Write a first pipeline file for the data file DATA (CSV, TSV, JSON Lines or CoNLL): the
    columns found, the input kind guessed, and the task's default recipe as comments."""
    from seqpipe.scaffold import write_pipeline

    registry, _ = _registry(strict_plugins)
    written, found = write_pipeline(data, task, out, registry, force)
    for note in found.notes:
        click.echo(note)
    click.echo(f"wrote {written}; next: seqpipe check {written}   then   seqpipe run {written}")


@main.command()
@strict_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(strict_plugins: bool, as_json: bool) -> None:
    """List every cell, topology, task, encoding, dataset and predictor, with the plugin that provides it."""
    registry, report = _registry(strict_plugins)
    serving, serving_report = _registry(strict_plugins, SERVING)  # predictors come from the torch-free group
    source = {
        "cell": registry,
        "topology": registry,
        "task": registry,
        "encoding": registry,
        "dataset": registry,
        "predictor": serving,
    }
    entries = {kind: [r.entries[kind][name] for name in r.names(kind)] for kind, r in source.items()}
    third_party = sorted({d for d in [*report.loaded.values(), *serving_report.loaded.values()] if d != "seqpipe"})
    distributions = {d: info for d in third_party if (info := distribution_info(d)) is not None}
    if as_json:
        listing = {kind: {e.name: e.plugin for e in kind_entries} for kind, kind_entries in entries.items()}
        click.echo(
            json.dumps(
                {
                    "registered": listing,
                    "plugins": report.loaded,
                    "serving_plugins": serving_report.loaded,
                    "failed": report.failed + serving_report.failed,
                    "distributions": {
                        d: {"version": i.version, "requires_seqpipe": i.requires_seqpipe, "compatible": i.compatible}
                        for d, i in distributions.items()
                    },
                },
                indent=2,
            )
        )
        return
    plural = {
        "cell": "cells",
        "topology": "topologies",
        "task": "tasks",
        "encoding": "encodings",
        "dataset": "datasets",
        "predictor": "predictors",
    }
    for kind, kind_entries in entries.items():
        click.echo(f"{plural[kind]}:")
        for e in kind_entries:
            info = distributions.get(e.distribution or "")
            shown = (
                f" ({e.distribution} {info.version})"
                if info
                else f" ({e.distribution})"
                if e.distribution != "seqpipe"
                else ""
            )
            click.echo(f"  {e.name:<16} {e.plugin}{shown}")
    for (kind, name), owners in sorted([*registry.clashes.items(), *serving.clashes.items()]):
        click.echo(f"clash: {kind} '{name}' registered by {', '.join(owners)}")
    for info in distributions.values():
        if (line := info.incompatibility()) is not None:
            click.echo(f"incompatible: {line}")


@main.command("test-plugin")
@click.argument("distribution")
@click.option("--no-export", "no_export", is_flag=True, help="Skip the ONNX graphs (seconds instead of minutes).")
@strict_option
def test_plugin(distribution: str, no_export: bool, strict_plugins: bool) -> None:
    """Run the contract kit on every plugin of one installed DISTRIBUTION (e.g. seqpipe-indrnn): cells in
    every topology, topologies with every cell, tasks on their example pipeline, encodings; exit 1 if any fails."""
    from seqpipe.plugin_tests import plugin_checks, run_checks

    registry, _ = _registry(strict_plugins)
    checks = plugin_checks(registry, distribution, export=not no_export)
    failed = run_checks(checks, click.echo)
    click.echo(f"{distribution}: {len(checks) - failed} of {len(checks)} checks passed.")
    if failed:
        raise SystemExit(1)


@main.group()
def export() -> None:
    """Turn a run's ONNX files into what a serving engine loads."""


@export.command("triton")
@click.argument("run", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The model repository to write (tritonserver --model-repository OUT).",
)
@click.option("--name", default=None, help="Model name prefix (default: the run directory's name).")
@click.option(
    "--max-batch-size",
    "max_batch_size",
    type=int,
    default=64,
    show_default=True,
    help="Triton's max_batch_size for every model.",
)
@click.option(
    "--force", is_flag=True, help="Write into --out even if it is not empty (this run's models are rewritten)."
)
def export_triton_command(run: Path, out: Path, name: str | None, max_batch_size: int, force: bool) -> None:
    """Write a Triton model repository (onnxruntime backend) for RUN's graphs: dynamic batching for whole
    sequences, sequence batching with the state kept on the server for the step graph."""
    from seqpipe.serving.servable import check_servable
    from seqpipe.serving.triton import export_triton

    check_servable(run)  # finished, intact, parity-checked: what predict serves, Triton serves
    for model in export_triton(run, out, name=name, max_batch_size=max_batch_size, force=force):
        how = (
            "sequence batching, state kept by Triton"
            if model.server_state
            else "dynamic batching" + (", the client carries the state" if model.graph == "step" else "")
        )
        click.echo(f"{model.name}: {model.folder} ({model.graph} graph; {how})")
    click.echo(f"serve it: tritonserver --model-repository {out.resolve()}")


@main.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN|NAME=RUN...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a container).")
@click.option("--http-port", default=8080, show_default=True, type=int, help="REST port (V2 protocol).")
@click.option("--grpc-port", default=8081, show_default=True, type=int, help="gRPC port (V2 protocol).")
@click.option("--metrics-port", default=8082, show_default=True, type=int, help="Prometheus metrics port.")
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="MLServer's parallel inference processes (0: in the server's own process).",
)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most inputs per request, and per batch gathered across requests.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="onnxruntime threads per batch: one answers a lone request soonest (more cores: more --workers).",
)
@click.option("--unchecked", is_flag=True, help="Serve runs that did not finish or pass parity (said once per run).")
def serve(
    runs: tuple[str, ...],
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    workers: int,
    device: str,
    max_batch_size: int,
    threads: int,
    unchecked: bool,
) -> None:
    """Serve runs over the Open Inference Protocol (V2, REST and gRPC) on MLServer: per run, NAME (the task's
    predictor: text in, seqpipe predict's records out) and NAME-step, NAME-sequence (each graph: tensors in and
    out, the state carried by the client). NAME defaults to the run directory's name."""
    from seqpipe.serving.servable import check_servable
    from seqpipe.serving.server import check_ports, parse_run, plan, start

    for argument in runs:
        run = parse_run(argument)[1]
        if unchecked:
            click.echo(f"{run}: served unchecked (--unchecked)", err=True)
        else:
            check_servable(run)
    served, left_out = plan(list(runs))
    check_ports(host, http_port, grpc_port, metrics_port)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    for model in served:
        click.echo(
            f"{model.name} (version {model.version}; {model.what}): http://{shown}:{http_port}/v2/models/{model.name}"
        )
    for line in left_out:
        click.echo(line)
    click.echo(f"gRPC on {host}:{grpc_port}, metrics on http://{shown}:{metrics_port}/metrics; Ctrl-C stops.")
    start(
        served,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        workers=workers,
        device=device,
        max_batch_size=max_batch_size,
        threads=threads,
    )


main.add_command(predict)
