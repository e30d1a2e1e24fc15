"""The ``seqpipe`` command. Plugins and torch load inside commands, never at import time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from seqpipe import __version__
from seqpipe.errors import SeqpipeError


class SeqpipeGroup(click.Group):
    """Turns every :class:`SeqpipeError` into one line on stderr and its exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SeqpipeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _registry(strict: bool):
    from seqpipe.plugins import make_plugin_manager
    from seqpipe.registry import build_registry

    pm, report = make_plugin_manager(strict=strict or None)
    return build_registry(pm), report


strict_option = click.option("--strict-plugins", is_flag=True, help="Fail if any plugin fails to load (also SEQPIPE_STRICT_PLUGINS=1).")
pipeline_argument = click.argument("pipeline", type=click.Path(path_type=Path, dir_okay=False))


@click.group(cls=SeqpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqpipe")
def main() -> None:
    """Declarative pipelines for recurrent sequence models: train, export to ONNX, prove parity."""


@main.command()
@pipeline_argument
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), help="Run directory (default: runs/<pipeline>-<time>).")
@click.option("--force", is_flag=True, help="Write into --out even if it is not empty.")
@strict_option
def run(pipeline: Path, out: Path | None, force: bool, strict_plugins: bool) -> None:
    """Train, evaluate, export and parity-check the pipeline in PIPELINE."""
    from seqpipe.run import run_pipeline

    registry, _ = _registry(strict_plugins)
    result = run_pipeline(pipeline, registry, out, force)
    click.echo(f"\nrun directory: {result.run_dir}")
    for path in result.files:
        click.echo(f"  {path.relative_to(result.run_dir)}")
    test = result.metrics["test"]
    click.echo("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)))
    click.echo(f"parity: passed (max abs diff {result.parity['max_abs_diff']:.2e})")
    click.echo(f"try: seqpipe predict {result.run_dir} {result.predict_example}")


@main.command()
@pipeline_argument
@strict_option
def check(pipeline: Path, strict_plugins: bool) -> None:
    """Validate PIPELINE (syntax, keys, plugin names and options, data file) without running it."""
    from seqpipe.assembly import resolve_pipeline

    registry, _ = _registry(strict_plugins)
    resolved = resolve_pipeline(pipeline, registry)
    m = resolved.config.model
    click.echo(f"{pipeline}: ok (task {resolved.config.task.name}, cell {m.cell}, topology {m.topology}, data {resolved.data.path})")


@main.command()
@strict_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(strict_plugins: bool, as_json: bool) -> None:
    """List every cell, topology, task and dataset, with the plugin that provides it."""
    registry, report = _registry(strict_plugins)
    listing = {kind: {name: registry.entries[kind][name].plugin for name in registry.names(kind)} for kind in registry.entries}
    if as_json:
        click.echo(json.dumps({"registered": listing, "plugins": report.loaded, "failed": report.failed}, indent=2))
        return
    plural = {"cell": "cells", "topology": "topologies", "task": "tasks", "dataset": "datasets"}
    for kind, names in listing.items():
        click.echo(f"{plural.get(kind, kind + 's')}:")
        for name, plugin in names.items():
            dist = report.loaded.get(plugin, "?")
            click.echo(f"  {name:<16} {plugin}" + (f" ({dist})" if dist != "seqpipe" else ""))
    for (kind, name), owners in sorted(registry.clashes.items()):
        click.echo(f"clash: {kind} '{name}' registered by {', '.join(owners)}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True,
              help="With a run directory: int8 / fp16 use its *.int8.onnx / *.fp16.onnx copies ([export] int8 / fp16 = true).")
@click.option("--steps", type=int, default=5, show_default=True, help="forecast: values to forecast ahead.")
@click.option("--condition", help="generate: the condition (e.g. a label) that starts each sample.")
@click.option("--count", type=int, default=5, show_default=True, help="generate: samples to draw.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="generate/seq2seq: 0 decodes greedily, > 0 samples.")
@click.option("--beam", type=int, default=1, show_default=True, help="generate/seq2seq: beam width (> 1: beam search).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling.")
@click.option("--max-length", type=int, help="generate/seq2seq: most symbols to emit (default: from the model).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result.")
def predict(model: Path, inputs: tuple[str, ...], device: str, precision: str, steps: int, condition: str | None, count: int,
            temperature: float, beam: int, seed: int, max_length: int | None, as_json: bool) -> None:
    """Predict with the ONNX export in MODEL (a run directory or .onnx file); torch not needed.

    \b
    classify:  seqpipe predict RUN "text one" "text two"
    tag:       seqpipe predict RUN "The jury praised the city ."
    generate:  seqpipe predict RUN --condition female --count 5 --temperature 0.8   (or --beam 5)
    seq2seq:   seqpipe predict RUN pronounce seqpipe   (--beam 5 for beam search)
    forecast:  seqpipe predict RUN series.csv --steps 10
    """
    from seqpipe.serving.predict import PredictOptions
    from seqpipe.serving.predict import predict as run_predict

    options = PredictOptions(device, precision, steps, condition, count, temperature, beam, seed, max_length)
    for r in run_predict(model, list(inputs), options):
        line = r.pop("line")
        click.echo(json.dumps(r, ensure_ascii=False) if as_json else line)
