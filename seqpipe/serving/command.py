"""The ``seqpipe predict`` command line: MODEL and the options every prediction takes are parsed
first; the rest (inputs and the task's own options) waits until the file's task is known, then a
click command built from that task's :class:`~seqpipe.predictor.Predictor` parses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from seqpipe.errors import SeqpipeError, did_you_mean
from seqpipe.plugins import SERVING, load_registry
from seqpipe.predictor import Option, PredictOptions, Predictor

COMMON_FLAGS = "--device, --precision, --json, --unchecked"


def task_option(option: Option) -> click.Option:
    if option.type is bool:
        return click.Option([option.flag, option.name], is_flag=True, default=bool(option.default), help=option.help)
    return click.Option([option.flag, option.name], type=option.type, default=option.default,
                        show_default=option.default is not None, help=option.help)


def task_command(task: str, predictor: type[Predictor]) -> click.Command:
    """A click command that parses what follows MODEL for ``task``: its inputs and declared options."""
    params: list[click.Parameter] = [click.Argument(["inputs"], nargs=-1), *map(task_option, predictor.options)]
    return click.Command(task, params=params, add_help_option=False)


def parse_task_arguments(task: str, predictor: type[Predictor], args: list[str], ctx: click.Context) -> tuple[list[str], dict[str, Any]]:
    """(inputs, option values by name) from ``args``; a usage mistake is one line naming the task."""
    try:
        parsed = task_command(task, predictor).make_context(ctx.command_path, list(args), parent=ctx)
    except click.NoSuchOption as exc:
        flags = [option.flag for option in predictor.options]
        raise SeqpipeError(f"task '{task}' takes no option {exc.option_name}{did_you_mean(exc.option_name, flags)}; its options: "
                           f"{predictor.describe_options()} (besides {COMMON_FLAGS}; see `seqpipe predict --help`).") from None
    except click.UsageError as exc:
        raise SeqpipeError(f"task '{task}': {exc.format_message()}") from None
    values = dict(parsed.params)
    return list(values.pop("inputs")), values


class PredictCommand(click.Command):
    """Leaves unknown options for the task's parser, and lists every task's options in its help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # click drops a "--" while it sets unknown options aside; keep it, and what follows, for the
        # task's parser, where it still means "inputs from here on, even if they start with -"
        cut = args.index("--") if "--" in args else len(args)
        super().parse_args(ctx, args[:cut])
        ctx.args = [*ctx.args, *args[cut:]]
        return ctx.args

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[INPUTS]...", "[TASK OPTIONS]"]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        registry, _ = load_registry(source=SERVING)
        with formatter.section("Tasks (the file's task decides which options apply)"):
            for task in registry.names("predictor"):
                predictor = registry.entries["predictor"][task].obj
                # written as is: wrapping would break the example command across lines
                formatter.write(f"{'':>{formatter.current_indent}}{task}:  seqpipe predict MODEL {predictor.usage}\n")
                records = [option.get_help_record(ctx) for option in map(task_option, predictor.options)]
                if records:  # click refuses an empty definition list
                    with formatter.indentation():
                        formatter.write_dl([r for r in records if r is not None])
        super().format_epilog(ctx, formatter)


@click.command(cls=PredictCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True,
              help="With a run directory: int8 / fp16 use its *.int8.onnx / *.fp16.onnx copies ([export] int8 / fp16 = true).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result.")
@click.option("--strict-plugins", is_flag=True, help="Fail if any serving plugin fails to load (also SEQPIPE_STRICT_PLUGINS=1).")
@click.option("--unchecked", is_flag=True, help="Serve MODEL even if its run did not finish, its files differ from the run's "
              "manifest or its parity check did not pass (said on stderr).")
@click.pass_context
def predict(ctx: click.Context, model: Path, device: str, precision: str, as_json: bool, strict_plugins: bool,
            unchecked: bool) -> None:
    """Predict with the ONNX export in MODEL (a run directory or .onnx file); torch not needed.

    The task named in MODEL's metadata picks the predictor (a plugin in the seqpipe.serving
    entry-point group for tasks that are not built in), which takes the INPUTS and its own options
    listed below; put inputs that start with - after --.
    """
    from seqpipe.serving.predict import predictor_for, task_of
    from seqpipe.serving.servable import check_servable

    if unchecked:
        click.echo(f"unchecked: serving {model} without checking its run's status, manifest or parity", err=True)
    else:
        check_servable(model)
    task = task_of(model)
    registry, _ = load_registry(strict_plugins or None, source=SERVING)
    predictor = predictor_for(task, registry, model)
    inputs, values = parse_task_arguments(task, predictor, ctx.args, ctx)
    for r in predictor().predict(model, inputs, PredictOptions(device, precision, values)):
        line = r.pop("line")
        click.echo(json.dumps(r, ensure_ascii=False) if as_json else line)
