"""Export step and sequence graphs to ONNX per the contract in DESIGN.md, on CPU in fp32.

Step graph: inputs ``x`` then ``state_in.<name>`` per state; outputs ``y`` then
``state_out.<name>``; states batch-first ``[batch, slots, hidden]``; the batch axis is dynamic.
Sequence graph: inputs ``x`` [batch, time] and ``lengths`` [batch]; outputs ``y`` and
``state_out.<name>``; batch and time axes dynamic. Each file describes itself in
``metadata_props`` (see :func:`write_metadata`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

import seqpipe
from seqpipe.contracts import StepModel
from seqpipe.errors import ExportError

FORMAT_VERSION = 1


class StepGraph(nn.Module):
    """The whole causal network advanced one time step: ``(x, *state_in) -> (y, *state_out)``."""

    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, new_state = self.model.step(x, tuple(state))
        return (y, *new_state)


def step_io_names(state_names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return ["x", *(f"state_in.{n}" for n in state_names)], ["y", *(f"state_out.{n}" for n in state_names)]


def export_step(model: StepModel, example_x: torch.Tensor, path: Path, *, opset: int, exporter: str, native: bool = True) -> str:
    """Write the step graph of ``model`` to ``path``; return a description of the exporter used.

    ``native``: when every cell has a native ONNX operator, build the graph from those operators
    run for one step (onnxruntime's fused kernels); otherwise, or with ``native=False``, trace
    ``model.step`` with torch.onnx's ``exporter``."""
    from seqpipe.onnx.native import native_step_support, step_graph

    if not getattr(getattr(model, "body", None), "causal", True):
        raise ExportError(f"topology '{type(model.body).__name__}' is not causal (it reads the future), so it has no step graph; "
                          "export a sequence graph instead, or choose a causal topology.")
    model = model.eval().cpu()
    if native and native_step_support(model) is None:
        onnx.save(step_graph(model, opset, "seqpipe_step"), str(path))
        check_onnx(path)
        return "seqpipe native RNN/GRU/LSTM operators, one time step"
    state = model.initial_state(example_x.shape[0])
    inputs, outputs = step_io_names(model.state_names)
    batch = torch.export.Dim("batch", min=1)
    return export_module(StepGraph(model).eval(), (example_x, *state), path, input_names=inputs, output_names=outputs,
                         dynamic_shapes=({0: batch}, tuple({0: batch} for _ in state)), opset=opset, exporter=exporter)


def export_module(module: nn.Module, args: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                  dynamic_shapes: tuple, opset: int, exporter: str) -> str:
    """Export ``module(*args)`` to ``path`` with named inputs and outputs and the given dynamic axes.

    ``dynamic_shapes`` mirrors ``args`` the way ``torch.export`` wants it (a tuple per ``*varargs``
    parameter), each leaf ``{axis: torch.export.Dim}``; outputs' axis 0 is the batch.
    """
    with _quiet():
        if exporter == "dynamo":
            program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False)
            program.save(str(path))
        else:
            leaves = [leaf for item in dynamic_shapes for leaf in (item if isinstance(item, tuple) else (item,))]
            axes = {name: {axis: dim.__name__ for axis, dim in leaf.items()} for name, leaf in zip(input_names, leaves)}
            axes.update({name: {0: "batch"} for name in output_names})
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes)
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


def check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the checker raises several types; all mean "do not serve this file"
        raise ExportError(f"{path}: exported ONNX file fails onnx.checker: {exc}") from exc


def write_metadata(path: Path, spec: dict[str, Any]) -> None:
    """Store ``seqpipe.spec`` (JSON) and flat keys for simple readers in ``metadata_props``."""
    model = onnx.load(str(path))
    flat = {
        "seqpipe.spec": json.dumps(spec, sort_keys=True),
        "seqpipe.format_version": str(spec["format_version"]),
        "seqpipe.graph": spec["graph"],
        "seqpipe.task": spec["task"],
        "seqpipe.cell": spec["cell"],
        "seqpipe.topology": spec["topology"],
        "seqpipe.state_names": ",".join(s["name"] for s in spec["states"]),
        "seqpipe.initial_state": spec["initial_state"]["rule"],
    }
    labels = spec.get("encoding", {}).get("output", {}).get("labels")
    if labels is not None:
        flat["seqpipe.labels"] = json.dumps(labels)
    del model.metadata_props[:]
    for key, value in flat.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "seqpipe", seqpipe.__version__
    onnx.save(model, str(path))


def export_sequence(task, model: StepModel, path: Path, *, opset: int, step_path: Path | None, exporter: str) -> str:
    """Write the whole-sequence graph to ``path``: native ONNX RNN/GRU/LSTM operators when every cell
    has one; otherwise, for a causal model, an ONNX Loop around the step graph (exported now if
    ``step_path`` is None), and for a bidirectional one, Loops over each direction's exported cell."""
    from seqpipe.onnx.native import supports

    model = model.eval().cpu()
    causal = getattr(model.body, "causal", True)
    if supports(model.body) is None or not causal:
        # non-causal without native operators (a bidirectional plugin cell): Loops over each exported cell
        onnx.save(task.sequence_graph(model, opset), str(path))
        described = "seqpipe native RNN/GRU/LSTM operators" if supports(model.body) is None else \
            "ONNX Loops over each direction's exported cell (torch.onnx dynamo)"
    else:
        from seqpipe.onnx.loop import loop_sequence_graph

        if step_path is None:
            step_path = path.with_name(f".{path.stem}-step.onnx")
            try:
                export_step(model, task.step_example(), step_path, opset=opset, exporter=exporter)
                step = onnx.load(str(step_path))
            finally:
                step_path.unlink(missing_ok=True)
        else:
            step = onnx.load(str(step_path))
        onnx.save(loop_sequence_graph(step, list(model.state_names), [model.num_slots, model.hidden_size],
                                      model.initial.served_values(), per_step=getattr(task, "sequence_y", "final") == "per_step"),
                  str(path))
        described = f"ONNX Loop around the step graph ({exporter})"
    check_onnx(path)
    return described


def base_spec(kind: str, resolved, model, task, *, opset: int, exporter: str) -> dict[str, Any]:
    """What every graph of a run says about itself: format, task, cell, topology, sizes, encoding."""
    cfg = resolved.config
    return {
        "format_version": FORMAT_VERSION,
        "graph": kind,
        "task": cfg.task.name,
        "cell": cfg.model.cell,
        "cell_options": resolved.cell_options.model_dump(mode="json"),
        "topology": cfg.model.topology,
        "topology_options": resolved.topology_options.model_dump(mode="json"),
        "causal": bool(getattr(model.body, "causal", True)),
        "sizes": {"hidden": model.hidden_size, "slots": model.num_slots},
        "encoding": task.encoding_spec(),
        "opset": opset,
        "exporter": exporter,
        "parity": {"status": "pending"},
        "seqpipe_version": seqpipe.__version__,
    }


def io_shapes(task) -> tuple[str, list, list]:
    """(x dtype, x shape per step after the batch axis, y shape per step after the batch axis)."""
    encoding = task.encoding_spec()
    x_dtype = encoding["input"]["dtype"]
    x_tail = [encoding["input"]["features"]] if "features" in encoding["input"] else []
    y_tail = [encoding["output"].get("size", len(encoding["output"].get("labels", [])))]
    return x_dtype, x_tail, y_tail


def graph_spec(kind: str, resolved, model: StepModel, task, *, opset: int, exporter: str) -> dict[str, Any]:
    """The self-description of a step or sequence graph: everything a program needs to start, step and decode."""
    cfg = resolved.config
    state_shape = ["batch", model.num_slots, model.hidden_size]
    x_dtype, x_tail, y_tail = io_shapes(task)
    per_step = getattr(task, "sequence_y", "final") == "per_step"
    states = [{"name": n, "shape": state_shape, "input": f"state_in.{n}", "output": f"state_out.{n}"} for n in model.state_names]
    if kind == "step":
        inputs = [{"name": "x", "dtype": x_dtype, "shape": ["batch", *x_tail]}]
        inputs += [{"name": f"state_in.{n}", "dtype": "float32", "shape": state_shape} for n in model.state_names]
        y = {"name": "y", "dtype": "float32", "shape": ["batch", *y_tail]}
    else:
        inputs = [{"name": "x", "dtype": x_dtype, "shape": ["batch", "time", *x_tail]},
                  {"name": "lengths", "dtype": "int64", "shape": ["batch"]}]
        inputs += [{"name": f"state_in.{n}", "dtype": "float32", "shape": state_shape, "optional": True,
                    "default": "the initial state (initial_state rule), broadcast to the batch"} for n in model.state_names]
        y = {"name": "y", "dtype": "float32", "shape": ["batch", "time", *y_tail] if per_step else ["batch", *y_tail],
             "read": "every valid step (padding unspecified)" if per_step else "after each sequence's last step"}
    outputs = [y] + [{"name": f"state_out.{n}", "dtype": "float32", "shape": state_shape} for n in model.state_names]
    spec = base_spec(kind, resolved, model, task, opset=opset, exporter=exporter)
    spec.update({
        "inputs": inputs,
        "outputs": outputs,
        "states": states,
        "initial_state": model.initial.spec() if kind == "step" else
        {"rule": cfg.model.initial_state, "note": "built in as the default of the optional state_in.* inputs; "
                                                  "feed state_in.* to continue sequences from a state"},
    })
    return spec
