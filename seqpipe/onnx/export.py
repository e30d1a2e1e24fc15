"""Export step and sequence graphs to ONNX per the ONNX contract (docs/architecture.md), on CPU in fp32.

Step graph: inputs ``x`` then ``state_in.<name>`` per state; outputs ``y`` then
``state_out.<name>``; states batch-first ``[batch, slots, size]``; the batch axis is dynamic.
Sequence graph: inputs ``x`` [batch, time] and ``lengths`` [batch]; outputs ``y`` and
``state_out.<name>``; batch and time axes dynamic. Each file describes itself in
``metadata_props`` (see :mod:`seqpipe.onnx.spec`).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from seqpipe.contracts import StepModel, Task, declared_layers
from seqpipe.errors import ExportError
from seqpipe.onnx.loop import loop_sequence_graph
from seqpipe.onnx.native import native_step_support, native_support, sequence_graph, step_graph
from seqpipe.onnx.spec import io_shapes
from seqpipe.onnx.torch_export import check_onnx, export_module
from seqpipe.signature import state_input, state_output


class StepGraph(nn.Module):
    """The whole causal network advanced one time step: ``(x, *state_in) -> (y, *state_out)``."""

    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, new_state = self.model.step(x, tuple(state))
        return (y, *new_state)


def step_io_names(state_names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return ["x", *(state_input(n) for n in state_names)], ["y", *(state_output(n) for n in state_names)]


def export_step(
    model: StepModel, example_x: torch.Tensor, path: Path, *, opset: int, exporter: str, native: bool = True
) -> str:
    """Write the step graph of ``model`` to ``path``; return a description of the exporter used.

    ``native``: when every cell declares a native ONNX operator, build the graph from those
    operators run for one step (onnxruntime's fused kernels); otherwise, or with ``native=False``,
    trace ``model.step`` with torch.onnx's ``exporter``."""
    if not model.body.causal:
        raise ExportError(
            f"topology '{type(model.body).__name__}' is not causal (it reads the future), so it has no step graph; "
            "export a sequence graph instead, or choose a causal topology."
        )
    model = model.eval().cpu()
    if native and native_step_support(model) is None:
        onnx.save(step_graph(model, opset, "seqpipe_step"), str(path))
        check_onnx(path)
        return "seqpipe native RNN/GRU/LSTM operators, one time step"
    state = model.initial_state(example_x.shape[0])
    inputs, outputs = step_io_names(model.state_names)
    batch = torch.export.Dim("batch", min=1)
    return export_module(
        StepGraph(model).eval(),
        (example_x, *state),
        path,
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=({0: batch}, tuple({0: batch} for _ in state)),
        opset=opset,
        exporter=exporter,
    )


def export_sequence(
    task: Task, model: StepModel, path: Path, *, opset: int, step_path: Path | None, exporter: str
) -> str:
    """Write the whole-sequence graph to ``path``: from the topology's declared layers when every cell
    has a native operator, or when the topology is not causal (Loops over each exported cell);
    otherwise an ONNX Loop around the step graph (exported now if ``step_path`` is None)."""
    model = model.eval().cpu()
    steps = (
        model.body.causal and model.streams
    )  # a head that cannot stream (attention pooling) has no step graph to loop
    if not steps and declared_layers(model.body) is None:
        raise ExportError(
            f"no sequence graph: topology '{type(model.body).__name__}' declares no layers, and the model has "
            "no step graph to loop over either (the topology is not causal, or the head cannot stream)."
        )
    native = native_support(model.body) is None
    if declared_layers(model.body) is not None and (native or not steps):
        onnx.save(_layered_sequence_graph(task, model, opset), str(path))
        described = (
            "seqpipe native RNN/GRU/LSTM operators"
            if native
            else "ONNX Loops over each direction's exported cell (torch.onnx dynamo)"
        )
    else:
        if step_path is None:
            step_path = path.with_name(f".{path.stem}-step.onnx")
            try:
                export_step(model, task.step_example(), step_path, opset=opset, exporter=exporter)
                step = onnx.load(str(step_path))
            finally:
                step_path.unlink(missing_ok=True)
        else:
            step = onnx.load(str(step_path))
        onnx.save(
            loop_sequence_graph(step, model.initial.served_values(), per_step=task.sequence_y == "per_step"), str(path)
        )
        described = f"ONNX Loop around the step graph ({exporter})"
    check_onnx(path)
    return described


def _layered_sequence_graph(task: Task, model: StepModel, opset: int) -> onnx.ModelProto:
    """The task's own sequence graph from declared layers, or the engine's generic one for a SequenceModel."""
    from seqpipe.models import SequenceModel

    graph = task.sequence_graph(model, opset)
    if graph is not None:
        return graph
    if not isinstance(model, SequenceModel):
        raise ExportError(
            f"task '{type(task).__name__}': its model is a {type(model).__name__}, not a SequenceModel, so the "
            "engine cannot build its sequence graph; implement Task.sequence_graph."
        )
    return sequence_graph(model, opset, io_shapes(task)[2][0], "seqpipe_sequence")
