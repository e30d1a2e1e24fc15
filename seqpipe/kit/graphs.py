"""The ONNX side of the cell and topology checks: graphs exported as the engine exports them, run
in onnxruntime and compared with torch."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from seqpipe.kit.common import OPSET, _assert_close, _ragged_batch, _random_state
from seqpipe.signature import state_input, state_output

if TYPE_CHECKING:
    import onnx
    import torch

    from seqpipe.contracts import Topology


# -- ONNX graphs ------------------------------------------------------------------------------------


def _probe_model(topology: Topology, per_step: bool = True):
    """The topology inside a :class:`seqpipe.models.SequenceModel` that reads numbers and whose head is
    the identity, so the graphs' ``y`` is the topology's own outputs (every step, or the summary)."""
    import torch
    from torch import nn

    from seqpipe.initial_state import InitialState
    from seqpipe.models import SequenceModel

    head = nn.Linear(topology.output_size, topology.output_size)
    with torch.no_grad():
        head.weight.copy_(torch.eye(topology.output_size))
        head.bias.zero_()
    return SequenceModel(
        nn.Identity(),
        topology,
        head,
        InitialState("zeros", topology.state_shapes),
        output="identity",
        per_step=per_step,
    ).eval()


def _check_traced_step_graph(model, name: str, atol: float, generator: torch.Generator, exporter: str) -> None:
    """The step graph torch.onnx traces from ``model.step`` agrees with torch on one step from given states."""
    from seqpipe.onnx.export import export_step

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        export_step(model, _example_step(model), path, opset=OPSET, exporter=exporter, native=False)
        _compare_one_step(model, _session(path), name, "traced step graph", atol, generator)


def _example_step(model) -> torch.Tensor:
    import torch

    return torch.zeros(2, model.body.input_size)


def _compare_one_step(model, session, name: str, label: str, atol: float, generator: torch.Generator) -> None:
    import torch

    batch = 3
    x_t = torch.randn(batch, model.body.input_size, generator=generator)
    state = _random_state(list(model.state_shapes.values()), batch, generator)
    with torch.no_grad():
        y, new = model.step(x_t, state)
    names = list(model.state_names)
    feeds = {"x": x_t.numpy(), **{state_input(n): s.numpy() for n, s in zip(names, state)}}
    got = session.run(["y", *(state_output(n) for n in names)], feeds)
    _assert_close(got[0], y, atol, f"{name}: {label} vs torch, y")
    for state_name, g, e in zip(names, got[1:], new):
        _assert_close(g, e, atol, f"{name}: {label} vs torch, state '{state_name}'")


def _check_layers_graph(model, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    """The sequence graph the engine builds from the topology's declared layers agrees with torch."""
    from seqpipe.onnx.native import sequence_graph

    size = model.body.output_size
    graph = sequence_graph(model, OPSET, size, "seqpipe_testing_sequence")
    _compare_sequence_graph(
        model, _session(graph), name, "sequence graph from declared layers", lengths, atol, generator
    )


def _check_step_loop_graph(
    model, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator, exporter: str
) -> None:
    """A causal topology without declared layers: its step graph, and the ONNX Loop around it that
    is its sequence graph (as ``seqpipe.onnx.export.export_sequence`` writes it), agree with torch."""
    import onnx

    from seqpipe.onnx.export import export_step
    from seqpipe.onnx.loop import loop_sequence_graph

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        export_step(model, _example_step(model), path, opset=OPSET, exporter=exporter)
        _compare_one_step(model, _session(path), name, "step graph", atol, generator)
        step = onnx.load(str(path))
    graph = loop_sequence_graph(step, model.initial.served_values(), per_step=model.per_step)
    _compare_sequence_graph(
        model, _session(graph), name, "sequence graph (a Loop around the step graph)", lengths, atol, generator
    )


def _compare_sequence_graph(
    model, session, name: str, label: str, lengths: torch.Tensor, atol: float, generator: torch.Generator
) -> None:
    """``y`` (at every valid step, or the summary) and the final states, from the graph's default
    (zero) state and from given states fed as ``state_in.*``."""
    import numpy as np
    import torch

    x = _ragged_batch(lengths, model.body.input_size, generator)
    names = list(model.state_names)
    valid = (np.arange(x.shape[1])[None, :] < lengths.numpy()[:, None]) if model.per_step else None  # [B, T]
    given = _random_state(list(model.state_shapes.values()), len(lengths), generator)
    for start, state in (("zero states", None), ("given states", given)):
        with torch.no_grad():
            y, final = model.sequence_output(x, lengths, state)
        feeds = {"x": x.numpy(), "lengths": lengths.numpy()}
        if state is not None:
            feeds.update({state_input(n): s.numpy() for n, s in zip(names, state)})
        got = session.run(["y", *(state_output(n) for n in names)], feeds)
        _assert_close(got[0], y, atol, f"{name}: {label} vs torch from {start}, y", valid)
        for state_name, g, e in zip(names, got[1:], final):
            _assert_close(g, e, atol, f"{name}: {label} vs torch from {start}, final state '{state_name}'")


def _session(graph: Path | onnx.ModelProto):
    import onnxruntime as ort

    source = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = (
        3  # errors only: optional state_in.* are initializers by design, which onnxruntime warns about
    )
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
