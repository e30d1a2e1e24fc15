"""torch.onnx, quietly: export a module with named inputs and outputs, and check the file it wrote."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from seqpipe.errors import ExportError


def export_module(
    module: nn.Module,
    args: tuple,
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple,
    opset: int,
    exporter: str,
) -> str:
    """Export ``module(*args)`` to ``path`` with named inputs and outputs and the given dynamic axes;
    return a description of the exporter used.

    ``dynamic_shapes`` mirrors ``args`` the way ``torch.export`` wants it (a tuple per ``*varargs``
    parameter), each leaf ``{axis: torch.export.Dim}``; outputs' axis 0 is the batch.
    """
    with _quiet(), _torchlib_table_built_once():
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
            assert program is not None  # dynamo=True always returns a program
            program.save(str(path))
        else:
            leaves = [leaf for item in dynamic_shapes for leaf in (item if isinstance(item, tuple) else (item,))]
            axes = {name: {axis: dim.__name__ for axis, dim in leaf.items()} for name, leaf in zip(input_names, leaves)}
            axes.update({name: {0: "batch"} for name in output_names})
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
            )
    check_onnx(path)
    return f"torch.onnx {exporter} (torch {torch.__version__.split('+')[0]})"


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and deprecation chatter; keep the user's terminal for seqpipe."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@functools.cache
def _torchlib_table(build, *args, **kwargs):
    return build(*args, **kwargs)


@contextlib.contextmanager
def _torchlib_table_built_once():
    """Build torch.onnx's table of ATen-to-ONNX functions once per opset and process.

    torch.onnx rebuilds that table (about 500 functions, each re-read from its source) on every
    dynamo export, about 0.7 s each time; seqpipe exports one graph per layer and direction of a cell
    without a native operator, so a stacked bidirectional model paid it four times over. The table is
    only read during an export (seqpipe passes no custom translation table). Where torch's private
    layout is not the one expected, the export runs exactly as torch ships it.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        original = _registration.ONNXRegistry.__dict__["from_torchlib"]
        build = original.__get__(None, _registration.ONNXRegistry)
    except (ImportError, AttributeError, KeyError):
        yield
        return
    _registration.ONNXRegistry.from_torchlib = classmethod(
        lambda cls, *args, **kwargs: _torchlib_table(build, *args, **kwargs)
    )
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = original


def check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the checker raises several types; all mean "do not serve this file"
        raise ExportError(f"{path}: exported ONNX file fails onnx.checker: {exc}") from exc
