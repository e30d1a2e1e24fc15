"""Sequence and step graphs built from what a topology and its cells declare.

A topology that declares its :class:`~seqpipe.contracts.Layers` gets graphs written layer by
layer: a cell that declares its native ONNX operator (:class:`~seqpipe.contracts.OnnxOperator`)
runs as that ``RNN``/``GRU``/``LSTM`` node, one per layer for both directions; any other cell is
exported once per layer and direction as a one-step graph and run by the masked Loop of
:mod:`seqpipe.onnx.loop` (the backward direction reads each sequence reversed within its own
length). onnxruntime runs the native operators with fused CPU (and cuDNN) kernels, they take
``sequence_lens`` so ragged batches are exact in both directions, and the time and batch axes stay
dynamic, which sidesteps two exporter traps seen with torch 2.13: a frozen time axis, and a GRU
exported with the wrong ``linear_before_reset``. Parity tests hold the result to torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import NodeProto, TensorProto

from seqpipe.contracts import (
    Cell,
    Layers,
    OnnxOperator,
    StepModel,
    Topology,
    declared_layers,
    declares_layers,
    native_operator,
)
from seqpipe.errors import ExportError
from seqpipe.onnx.builder import (
    GraphBuilder,
    finish_model,
    float_zero,
    optional_state_inputs,
    renamed_initializer,
    state_value_infos,
    tensor_info,
)
from seqpipe.onnx.loop import masked_loop
from seqpipe.onnx.pooling import pool_sequence, pool_step
from seqpipe.onnx.torch_export import export_module
from seqpipe.onnx.word_characters import emit_word_characters
from seqpipe.pooling import POOL_STATE
from seqpipe.signature import state_input, state_output
from seqpipe.word_characters import WordCharacters


def layers_support(topology_cls: type) -> str | None:
    """None if graphs can be built layer by layer from this topology class's declared layers, else the
    reason not. (A causal topology without declared layers still has a sequence graph: a Loop around
    its step graph, see :func:`seqpipe.onnx.export.export_sequence`.)"""
    if not declares_layers(topology_cls):
        return f"topology '{topology_cls.__name__}' declares no layers (Topology.layers)"
    return None


def native_support(topology: Topology) -> str | None:
    """None if every cell of ``topology`` runs as a native ONNX operator, else the reason not."""
    layers = declared_layers(topology)
    if layers is None:
        return f"topology '{type(topology).__name__}' declares no layers"
    for cells in layers.cells:
        for cell in cells:
            if native_operator(cell) is None:
                return f"cell '{type(cell).__name__}' declares no native ONNX operator"
    return None


def _native_layer(
    g: GraphBuilder,
    ops: list[OnnxOperator],
    hidden: int,
    x: str,
    seq_lens: str,
    layer: int,
    initial: list[str],
    n_states: int,
) -> tuple[str, list[str]]:
    """One native operator over ``x`` [T, B, I] for 1 or 2 directions. Returns Y [T, D, B, H] and final states [D, B,
    H]."""
    op_type = ops[0].op_type
    if any(op.op_type != op_type for op in ops):
        raise ExportError(
            f"layer {layer}: its directions declare different ONNX operators ({', '.join(op.op_type for op in ops)})"
        )
    attrs: dict[str, Any] = {"hidden_size": hidden, "direction": "bidirectional" if len(ops) == 2 else "forward"}
    for key, value in ops[0].attributes.items():  # a list attribute (activations) is given per direction
        attrs[key] = [v for op in ops for v in op.attributes[key]] if isinstance(value, list) else value
    inputs = [
        x,
        g.const(f"W{layer}", np.stack([op.W for op in ops])),
        g.const(f"R{layer}", np.stack([op.R for op in ops])),
        g.const(f"B{layer}", np.stack([op.B for op in ops])),
        seq_lens,
        *initial,
    ]  # initial_h (and initial_c): absent means zeros
    outs = g.op(op_type, inputs, f"{op_type.lower()}{layer}", n_out=1 + n_states, **attrs)
    return outs[0], outs[1:]


class _CellStep(torch.nn.Module):
    """One cell, one step: ``(x_t [B, I], *state) -> new state``, for export as a Loop body."""

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.cell(x_t, tuple(state)))


def _export_cell(g: GraphBuilder, cell: Cell, prefix: str) -> onnx.GraphProto:
    """The cell as an ONNX graph (inputs ``x``, ``state_in.<n>``; outputs ``<prefix>state_out.<n>``) with
    every other name prefixed; its weights become initializers of the outer graph."""
    names = list(cell.state_names)
    batch = torch.export.Dim("batch", min=1)
    args = (torch.zeros(2, cell.input_size), *(torch.zeros(2, size) for size in cell.state_sizes))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.onnx"
        export_module(
            _CellStep(cell.eval().cpu()).eval(),
            args,
            path,
            input_names=["x", *(state_input(n) for n in names)],
            output_names=[state_output(n) for n in names],
            dynamic_shapes=({0: batch}, tuple({0: batch} for _ in names)),
            opset=g.opset,
            exporter="dynamo",
        )
        model = onnx.load(str(path))
    g.add_functions(model.functions)
    graph = model.graph
    keep = {i.name for i in graph.input}

    def renamed(name: str) -> str:
        return name if not name or name in keep else prefix + name

    for init in graph.initializer:
        g.initializers.append(renamed_initializer(init, prefix + init.name))
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [renamed(i) for i in node.input]
        node.output[:] = [renamed(o) for o in node.output]
    return graph


def _reverse_index(g: GraphBuilder, x: str, seq_lens: str) -> str:
    """[T, B, 1] int64 time indices that reverse each sequence within its length (padding stays put);
    ``seq_lens`` int64 [B]."""
    time = g.op("Shape", [x], "time", start=0, end=1)[0]  # [1]
    steps = g.op(
        "Range",
        [
            g.const("zero", np.array(0, np.int64)),
            g.op("Squeeze", [time], "time_scalar")[0],
            g.const("one", np.array(1, np.int64)),
        ],
        "steps",
    )[0]  # [T]
    t = g.op("Unsqueeze", [steps, g.const("axis1", np.array([1], np.int64))], "t_col")[0]  # [T, 1]
    lengths = g.op("Unsqueeze", [seq_lens, g.const("axis0", np.array([0], np.int64))], "len_row")[0]  # [1, B] int64
    back = g.op("Sub", [g.op("Sub", [lengths, g.const("one", np.array(1, np.int64))], "last")[0], t], "back")[
        0
    ]  # [T, B]
    index = g.op(
        "Where",
        [g.op("Less", [t, lengths], "inside")[0], back, g.op("Expand", [t, g.op("Shape", [back], "tb")[0]], "t_tb")[0]],
        "rev_index",
    )[0]
    return g.op("Unsqueeze", [index, g.const("axis2", np.array([2], np.int64))], "rev_index3")[0]  # [T, B, 1]


def _gather_time(g: GraphBuilder, values: str, index: str) -> str:
    """values [T, B, F] reordered along time by ``index`` [T, B, 1]."""
    full = g.op("Expand", [index, g.op("Shape", [values], "values_shape")[0]], "index_full")[0]
    return g.op("GatherElements", [values, full], "reordered", axis=0)[0]


def _cell_loop(
    g: GraphBuilder, cell: Cell, x: str, lengths: str, initial: list[str], prefix: str
) -> tuple[str, list[str]]:
    """The masked Loop stepping ``cell`` over ``x`` [T, B, I]: (outputs [T, B, output_size], zero past
    each length; final states [B, size] each, frozen at each sequence's length)."""
    body = _export_cell(g, cell, prefix)
    names = list(cell.state_names)

    def build_step(x_t: str, states: list[str]) -> tuple[list[NodeProto], list[str], str]:
        rename = {"x": x_t, **{state_input(n): s for n, s in zip(names, states)}}
        for node in body.node:
            node.input[:] = [rename.get(i, i) for i in node.input]
        new = [prefix + state_output(n) for n in names]
        return list(body.node), new, new[0]

    finals, _, outputs = masked_loop(
        g,
        x,
        lengths,
        initial,
        build_step,
        time_axis=0,
        state_ranks=[2] * len(names),
        y_rank=2,
        prefix=prefix,
        scan_y=True,
    )
    assert outputs is not None  # scan_y: the outputs at every step
    return outputs, finals


def _loop_layer(
    g: GraphBuilder, cells: tuple[Cell, ...], x: str, seq_lens: str, layer: int, initial: list[str]
) -> tuple[str, list[str]]:
    """Like :func:`_native_layer`, for cells without a native operator: one Loop per direction.
    ``initial``: per state [D, B, size] (empty for zeros). Returns Y [T, D, B, out] and finals [D, B, size] each."""
    if initial:
        per_dir = [
            [g.op("Gather", [state, g.const("d", np.array(d, np.int64))], f"init_d{d}", axis=0)[0] for state in initial]
            for d in range(len(cells))
        ]  # [B, size] each
    else:
        batch = g.op("Shape", [x], "batch_size", start=1, end=2)[0]
        zeros = []
        for size in cells[0].state_sizes:
            shape = g.op("Concat", [batch, g.const("size", np.array([size], np.int64))], "b_size", axis=0)[0]
            zeros.append(
                g.op(
                    "ConstantOfShape",
                    [shape],
                    "zeros_b",
                    value=float_zero(),
                )[0]
            )
        per_dir = [zeros for _ in cells]
    lengths = g.op("Cast", [seq_lens], "lengths_i64", to=TensorProto.INT64)[0]  # the loop counter is int64
    ys, finals = [], []
    for d, cell in enumerate(cells):
        source = x
        if d == 1:  # backward: each sequence reversed within its own length
            index = _reverse_index(g, x, lengths)
            source = _gather_time(g, x, index)
        y, final = _cell_loop(g, cell, source, lengths, per_dir[d], f"l{layer}d{d}/")
        if d == 1:
            y = _gather_time(g, y, index)  # back to input order; padding (zeros) stays put
        ys.append(g.op("Unsqueeze", [y, g.const("axis1", np.array([1], np.int64))], "y_dir")[0])  # [T, 1, B, out]
        finals.append(
            [g.op("Unsqueeze", [f, g.const("axis0", np.array([0], np.int64))], "final_dir")[0] for f in final]
        )
    y = ys[0] if len(ys) == 1 else g.op("Concat", ys, "y_dirs", axis=1)[0]
    states = [
        parts[0] if len(parts) == 1 else g.op("Concat", list(parts), "finals", axis=0)[0] for parts in zip(*finals)
    ]
    return y, states


def _layer_initial(g: GraphBuilder, states: list[str] | None, slots: list[int]) -> list[str]:
    """One layer's initial states, [D, B, size] each, sliced from the full [B, S, size] states ([] for zeros)."""
    if states is None:
        return []
    out = []
    for state in states:
        part = g.op(
            "Slice",
            [
                state,
                g.const("start", np.array([slots[0]], np.int64)),
                g.const("end", np.array([slots[-1] + 1], np.int64)),
                g.const("axis1", np.array([1], np.int64)),
            ],
            "layer_slots",
        )[0]  # [B, D, size]
        out.append(g.op("Transpose", [part], "dbh", perm=[1, 0, 2])[0])
    return out


def emit_topology(
    g: GraphBuilder, topology: Topology, x: str, seq_lens: str, initial_states: list[str] | None = None
) -> tuple[str, list[str], str]:
    """``x`` [T, B, I] → (summary [B, output_size], final states each [B, slots, size], the last
    layer's outputs at every step [T, B, output_size], zero past each length).

    ``initial_states``: names of [B, slots, size] tensors in ``state_names`` order (None: zeros).
    """
    layers = declared_layers(topology)
    if layers is None:
        raise ExportError(
            f"no sequence graph from layers: topology '{type(topology).__name__}' declares none; "
            "export the step graph instead."
        )
    finals: list[list[str]] = []
    for index, cells in enumerate(layers.cells):
        slots = list(range(index * len(cells), (index + 1) * len(cells)))
        initial = _layer_initial(g, initial_states, slots)
        found = [native_operator(cell) for cell in cells]
        ops = [op for op in found if op is not None]
        if len(ops) == len(found):
            hidden = ops[0].R.shape[1]  # the operator's own hidden size: every state of its cell has it
            y, states = _native_layer(g, ops, hidden, x, seq_lens, index, initial, len(cells[0].state_names))
        else:
            y, states = _loop_layer(g, cells, x, seq_lens, index, initial)  # y: [T, D, B, out]
        finals.append(states)
        x = _merge_directions(g, y, len(cells), layers, axis=1, hint="outputs")  # [T, B, output]
    # final states: per layer [D, B, size] -> all slots [S, B, size] -> batch-first [B, S, size]
    state_out = []
    for k in range(len(finals[0])):
        parts = [f[k] for f in finals]
        stacked = g.op("Concat", parts, "slots", axis=0)[0] if len(parts) > 1 else parts[0]
        state_out.append(g.op("Transpose", [stacked], "batch_first", perm=[1, 0, 2])[0])
    # summary: the last layer's final output state of each direction, merged like the outputs
    summary = _merge_directions(g, finals[-1][0], len(layers.cells[-1]), layers, axis=0, hint="summary")  # [B, output]
    return summary, state_out, x


def _merge_directions(g: GraphBuilder, values: str, directions: int, layers: Layers, *, axis: int, hint: str) -> str:
    """Drop or merge the direction axis of ``values`` ([T, D, B, H] at axis 1, or [D, B, H] at axis 0)."""
    axis_const = g.const("axis", np.array([axis], np.int64))
    if directions == 1:
        return g.op("Squeeze", [values, axis_const], hint)[0]
    if layers.merge == "sum":
        return g.op("ReduceSum", [values, axis_const], hint, keepdims=0)[0]
    perm = [0, 2, 1, 3] if axis == 1 else [1, 0, 2]  # direction next to the features, then flatten the two
    moved = g.op("Transpose", [values], f"{hint}_dirs_last", perm=perm)[0]
    shape = np.array([0, 0, -1] if axis == 1 else [0, -1], np.int64)
    return g.op("Reshape", [moved, g.const("flat", shape)], hint)[0]


def _input(g: GraphBuilder, model, time: bool) -> tuple[onnx.ValueInfoProto, str]:
    """The graph input ``x`` (token ids, embedded inside; or features) and the vectors the topology reads."""
    dims = ["batch", "time"] if time else ["batch"]
    if isinstance(model.embed, WordCharacters):  # [..., word id + its characters' ids]
        embedded = emit_word_characters(g, model.embed, "x", rank=len(dims) + 1)
        return tensor_info("x", TensorProto.INT64, [*dims, model.embed.ids_per_step]), embedded
    if model.token_input:
        embedded = g.op("Gather", [g.const("embedding", model.embed[0].weight.detach().numpy()), "x"], "embed")[
            0
        ]  # [B, (T,) E]
        return tensor_info("x", TensorProto.INT64, dims), embedded
    return tensor_info("x", TensorProto.FLOAT, [*dims, model.body_input_size]), "x"


def sequence_graph(model, opset: int, y_size: int, name: str) -> onnx.ModelProto:
    """The sequence graph of a :class:`seqpipe.models.SequenceModel` whose topology declares layers.

    Inputs: ``x`` — token ids [batch, time] (int64) or features [batch, time, F] (float32) —,
    ``lengths`` [batch], optional ``state_in.*`` [batch, slots, size] (default: the served initial
    state). Outputs: ``y`` — [batch, time, y_size] when the model is per-step, else [batch, y_size]
    after each sequence's last step — and ``state_out.*``.
    """
    g = GraphBuilder(opset=opset)
    lengths32 = g.op("Cast", ["lengths"], "lengths_i32", to=TensorProto.INT32)[0]
    x_info, embedded = _input(g, model, time=True)
    time_major = g.op("Transpose", [embedded], "time_major", perm=[1, 0, 2])[0]  # [T, B, E]
    initial = optional_state_inputs(g, model.initial.served_values(), "x")
    n_body = len(model.body.state_names)  # a pooling's running statistics come after the topology's states
    summary, states, outputs = emit_topology(g, model.body, time_major, lengths32, initial[:n_body])
    if model.pooling is not None and not model.per_step:
        lengths64 = g.op("Cast", ["lengths"], "lengths_i64", to=TensorProto.INT64)[0]
        summary, pool = pool_sequence(
            g, model.pooling, outputs, lengths64, initial[n_body] if len(initial) > n_body else None
        )
        states = states + ([pool] if pool is not None else [])
    weight_t = g.const("head_w_t", model.head.weight.detach().numpy().T.copy())  # [O, C]
    bias = g.const("head_b", model.head.bias.detach().numpy())
    if model.per_step:
        # the head on the time-major outputs, then batch first: onnxruntime's CPU provider crashes
        # (1.31, a segfault) on an fp16 copy where a Transpose feeds this MatMul (its
        # MatmulTransposeFusion), and the two orders give the same numbers
        time_major_logits = g.op("Add", [g.op("MatMul", [outputs, weight_t], "head")[0], bias], "head_bias")[
            0
        ]  # [T, B, C]
        if model.residual:
            time_major_logits = g.op("Add", [time_major_logits, time_major], "residual")[0]
        logits = g.op("Transpose", [time_major_logits], "batch_major", perm=[1, 0, 2])[0]  # [B, T, C]
        y_shape: list[str | int] = ["batch", "time", y_size]
    else:
        logits = g.op("Add", [g.op("MatMul", [summary, weight_t], "head")[0], bias], "head_bias")[0]  # [B, C]
        if model.residual:
            logits = g.op("Add", [logits, _last_input(g, time_major)], "residual")[0]
        y_shape = ["batch", y_size]
    _emit_outputs(g, model, logits, states)
    graph = g.graph(
        name,
        [
            x_info,
            tensor_info("lengths", TensorProto.INT64, ["batch"]),
            *state_value_infos(model.state_shapes, "in", batch="state_batch"),
        ],
        [tensor_info("y", TensorProto.FLOAT, y_shape), *state_value_infos(model.state_shapes, "out")],
    )
    return finish_model(g, graph, opset)


def _last_input(g: GraphBuilder, time_major: str) -> str:
    """Each sequence's last valid input, [B, F], from ``time_major`` [T, B, F] and ``lengths``."""
    last = g.op(
        "Sub",
        [
            g.op("Cast", ["lengths"], "lengths_last_i64", to=TensorProto.INT64)[0],
            g.const("one_last", np.array(1, np.int64)),
        ],
        "last_step",
    )[0]  # [B]
    index = g.op("Unsqueeze", [last, g.const("axes_last", np.array([0, 2], np.int64))], "last_index")[0]  # [1, B, 1]
    full = g.op(
        "Expand",
        [
            index,
            g.op(
                "Concat",
                [g.const("one_row", np.array([1], np.int64)), g.op("Shape", [time_major], "last_shape", start=1)[0]],
                "last_dims",
                axis=0,
            )[0],
        ],
        "last_index_full",
    )[0]  # [1, B, F]
    picked = g.op("GatherElements", [time_major, full], "last_input", axis=0)[0]
    return g.op("Squeeze", [picked, g.const("axis_last", np.array([0], np.int64))], "last_input_2d")[0]


def _emit_outputs(g: GraphBuilder, model, logits: str, states: list[str]) -> None:
    """The graph outputs: ``y`` (probabilities or values, per the model's output) and ``state_out.*``."""
    if model.output == "softmax":
        g.node("Softmax", [logits], ["y"], "probabilities", axis=-1)
    else:
        g.node("Identity", [logits], ["y"], "values")
    for state_name, state in zip(model.state_names, states):
        g.node("Identity", [state], [state_output(state_name)], f"state_out_{state_name}")


def native_step_support(model: StepModel) -> str | None:
    """None when ``model``'s step graph can be built from native operators; else why not."""
    from seqpipe.models import SequenceModel

    if not isinstance(model, SequenceModel) or type(model).step is not SequenceModel.step:
        return f"{type(model).__name__} is not a plain SequenceModel"
    if not model.body.causal or not model.streams:
        return "the topology is not causal" if not model.body.causal else "the head cannot stream"
    return native_support(model.body)


def step_graph(model, opset: int, name: str) -> onnx.ModelProto:
    """The step graph of a causal :class:`seqpipe.models.SequenceModel` whose cells declare native
    operators, built from those operators run for one time step.

    Same contract as the traced step graph: inputs ``x`` — token ids [batch] (int64) or features
    [batch, F] (float32) — and ``state_in.*`` [batch, slots, size]; outputs ``y`` [batch, size]
    and ``state_out.*``. onnxruntime runs each layer as one fused kernel; the graph is written in
    milliseconds without tracing (a torch.onnx export of the step takes 1-3 s) and does not depend
    on how a torch.onnx version traces the cell. Served speed matches the traced graph on CPU
    (benchmarks/serving.py, "step graph" rows).
    """
    g = GraphBuilder(opset=opset)
    x_info, embedded = _input(g, model, time=False)
    one_step = g.op("Unsqueeze", [embedded, g.const("axis0", np.array([0], np.int64))], "one_step")[0]  # [1, B, E]
    # no sequence_lens: every sequence runs its one step
    summary, states, _ = emit_topology(g, model.body, one_step, "", [state_input(n) for n in model.body.state_names])
    if (
        model.pooling is not None
    ):  # the running statistics take this step's output (native_step_support: a streaming one)
        summary, pool = pool_step(g, model.pooling, summary, state_input(POOL_STATE))
        states = states + [pool]
    logits = g.op(
        "Gemm",
        [
            summary,
            g.const("head_w", model.head.weight.detach().numpy()),
            g.const("head_b", model.head.bias.detach().numpy()),
        ],
        "head",
        transB=1,
    )[0]  # [B, C]
    if model.residual:
        logits = g.op("Add", [logits, embedded], "residual")[0]
    _emit_outputs(g, model, logits, states)
    graph = g.graph(
        name,
        [x_info, *state_value_infos(model.state_shapes, "in")],
        [
            tensor_info("y", TensorProto.FLOAT, ["batch", model.head.out_features]),
            *state_value_infos(model.state_shapes, "out"),
        ],
    )
    return finish_model(g, graph, opset)
