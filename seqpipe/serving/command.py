"""The ``seqpipe predict`` command line: MODEL and the options every prediction takes are parsed
first; the rest (inputs and the task's own options) waits until the file's task is known, then a
click command built from that task's :class:`~seqpipe.predictor.Predictor` parses it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from seqpipe.errors import SeqpipeError, did_you_mean
from seqpipe.plugins import SERVING, load_registry
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.input_file import InputFile, chunks

COMMON_FLAGS = ("--device", "--precision", "--json", "--file", "--column", "--unchecked")
CHUNK = 256  # inputs of a --file handed to the predictor at once: bounds memory however long the file


def common_flags(predictor: type[Predictor]) -> str:
    """The options `seqpipe predict` itself takes for this task (--file and --column: only for a list of inputs)."""
    return ", ".join(f for f in COMMON_FLAGS if predictor.takes_inputs or f not in ("--file", "--column"))


def task_option(option: Option) -> click.Option:
    if option.type is bool:
        return click.Option([option.flag, option.name], is_flag=True, default=bool(option.default), help=option.help)
    return click.Option(
        [option.flag, option.name],
        type=option.type,
        default=option.default,
        show_default=option.default is not None,
        help=option.help,
    )


def task_command(task: str, predictor: type[Predictor]) -> click.Command:
    """A click command that parses what follows MODEL for ``task``: its inputs and declared options."""
    params: list[click.Parameter] = [click.Argument(["inputs"], nargs=-1), *map(task_option, predictor.options)]
    return click.Command(task, params=params, add_help_option=False)


def parse_task_arguments(
    task: str, predictor: type[Predictor], args: list[str], ctx: click.Context
) -> tuple[list[str], dict[str, Any]]:
    """(inputs, option values by name) from ``args``; a usage mistake is one line naming the task."""
    try:
        parsed = task_command(task, predictor).make_context(ctx.command_path, list(args), parent=ctx)
    except click.NoSuchOption as exc:
        flags = [option.flag for option in predictor.options]
        raise SeqpipeError(
            f"task '{task}' takes no option {exc.option_name}{did_you_mean(exc.option_name, flags)}; its options: "
            f"{predictor.describe_options()} (besides {common_flags(predictor)}; see `seqpipe predict --help`)."
        ) from None
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
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8", "fp16"]),
    default="fp32",
    show_default=True,
    help="With a run directory: int8 / fp16 use its *.int8.onnx / *.fp16.onnx copies ([export] int8 / fp16 = true).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result.")
@click.option(
    "--strict-plugins", is_flag=True, help="Fail if any serving plugin fails to load (also SEQPIPE_STRICT_PLUGINS=1)."
)
@click.option(
    "--file",
    "input_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the inputs from this file, streamed in chunks: CSV/TSV (the model's input column, or --column), "
    "JSON Lines (the same field), or any other file one input per line.",
)
@click.option(
    "--column", help="With --file: the column or JSON field holding the inputs (default: the model's input column)."
)
@click.option(
    "--unchecked",
    is_flag=True,
    help="Serve MODEL even if its run did not finish, its files differ from the run's "
    "manifest or its parity check did not pass (said on stderr).",
)
@click.pass_context
def predict(
    ctx: click.Context,
    model: Path,
    device: str,
    precision: str,
    as_json: bool,
    strict_plugins: bool,
    input_file: Path | None,
    column: str | None,
    unchecked: bool,
) -> None:
    """Predict with the ONNX export in MODEL (a run directory or .onnx file); torch not needed.

    The task named in MODEL's metadata picks the predictor (a plugin in the seqpipe.serving
    entry-point group for tasks that are not built in), which takes the INPUTS and its own options
    listed below; put inputs that start with - after --.
    """
    from seqpipe.serving.predict import input_column_of, predictor_for, spec_of
    from seqpipe.serving.servable import check_servable

    if unchecked:
        click.echo(f"unchecked: serving {model} without checking its run's status, manifest or parity", err=True)
    else:
        check_servable(model)
    spec = spec_of(model)  # read once: the task, and the input column --file reads
    task = spec["task"]
    registry, _ = load_registry(strict_plugins or None, source=SERVING)
    predictor = predictor_for(task, registry, model)
    inputs, values = parse_task_arguments(task, predictor, ctx.args, ctx)
    options = PredictOptions(device, precision, values)
    if column is not None and input_file is None:
        raise SeqpipeError("--column goes with --file (the column of the file that holds the inputs).")
    if input_file is None:
        _print(predictor().predict(model, inputs, options), as_json)
        return
    if inputs:
        raise SeqpipeError(
            f"give the inputs as arguments or with --file, not both (found {inputs[0]!r} besides --file {input_file})."
        )
    if not predictor.takes_inputs:
        raise SeqpipeError(
            f"task '{task}' does not read a list of inputs, so --file does not apply; use: seqpipe predict MODEL "
            f"{predictor.usage}"
        )
    _predict_file(predictor(), model, InputFile(input_file, column, input_column_of(spec)), options, as_json)


def _print(results: list[dict[str, Any]], as_json: bool) -> None:
    for r in results:
        line = r.pop("line")
        click.echo(json.dumps(r, ensure_ascii=False) if as_json else line)


def _predict_file(predictor: Predictor, model: Path, inputs: InputFile, options: PredictOptions, as_json: bool) -> None:
    """Every input of the file, CHUNK at a time through one set of sessions, each chunk's results
    printed before the next is read; a progress bar on a terminal."""
    from tqdm import tqdm

    from seqpipe.serving.runtime import sessions_kept

    shown = sys.stderr.isatty()
    bar = tqdm(
        total=_lines(inputs.path) if shown else None, unit=" lines", file=sys.stderr, disable=not shown, leave=False
    )
    done = 0
    with sessions_kept(), bar:
        for chunk in chunks(iter(inputs), CHUNK):
            try:
                results = predictor.predict(model, [item.value for item in chunk], options)
            except SeqpipeError as exc:  # "input N: …" of this chunk is said of the file's line
                raise _in_file(exc, inputs.path, chunk) from None
            if len(results) != len(chunk):
                raise SeqpipeError(
                    f"the '{type(predictor).__name__}' predictor gave {len(results)} results for {len(chunk)} inputs; "
                    "--file needs one result per input."
                )
            for item, r in zip(chunk, results):
                r["input_line"] = item.line
            _print(results, as_json)
            bar.update(chunk[-1].line - bar.n)
            done += len(chunk)
    if inputs.blank:
        click.echo(f"{inputs.path}: {inputs.blank} blank line(s) skipped", err=True)
    if done == 0:
        raise SeqpipeError(f"--file {inputs.path}: holds no inputs.")


def _in_file(exc: SeqpipeError, path: Path, chunk: list) -> SeqpipeError:
    """A predictor's error about "input N" of a chunk, said of the file's line that input came from;
    any other error unchanged."""
    found = re.match(r"input (\d+)\b(.*)", str(exc), flags=re.DOTALL)
    if not found or not 1 <= int(found[1]) <= len(chunk):
        return exc  # about the options or the model, not one input: said as it is
    error = SeqpipeError(f"{path}:{chunk[int(found[1]) - 1].line}{found[2]}")
    error.exit_code = exc.exit_code
    return error


def _lines(path: Path) -> int:
    """The file's line count, for the progress bar's total (read in blocks: memory stays flat)."""
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
