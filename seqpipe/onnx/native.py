"""Whole-sequence ONNX graphs built from native RNN/GRU/LSTM operators, for the built-in cells,
and from ONNX Loops over each exported cell for any other cell (plugins), in either direction.

onnxruntime runs these operators with fused CPU (and cuDNN) kernels, they take ``sequence_lens``
so ragged batches are exact in both directions, and the time and batch axes stay dynamic, which
sidesteps two exporter traps seen with torch 2.13: a frozen time axis, and a GRU exported with the
wrong ``linear_before_reset``. Weights are copied from the cells' torch modules with the gate
order each operator expects; parity tests hold the result to torch.

A cell without a native operator is exported once per layer and direction as a one-step graph
``(x_t, *state) -> state`` and run by an ONNX ``Loop`` (time axis dynamic, finished sequences
frozen, outputs zero past each length); the backward direction reads each sequence reversed
within its own length. So a bidirectional topology of plugin cells has a sequence graph too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

from seqpipe.builtin.cells import FusedCell, GRUCell, LSTMCell, VanillaRNNCell
from seqpipe.builtin.topologies import Bidirectional, Stacked
from seqpipe.contracts import Topology
from seqpipe.errors import ExportError

IR_VERSION = 10  # onnxruntime 1.20+ reads it; onnx would otherwise stamp its newest

# torch's gate rows -> ONNX's: LSTM torch (i, f, g, o) -> ONNX (i, o, f, c); GRU torch (r, z, n) -> ONNX (z, r, h)
GATE_ORDER = {LSTMCell: [0, 3, 1, 2], GRUCell: [1, 0, 2], VanillaRNNCell: [0]}
OP_TYPE = {LSTMCell: "LSTM", GRUCell: "GRU", VanillaRNNCell: "RNN"}


@dataclass
class GraphBuilder:
    """Collects nodes and initializers with unique names."""

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    functions: list[onnx.FunctionProto] = field(default_factory=list)  # from exported cell graphs
    opset: int = 18  # for cells exported by torch.onnx (Loop bodies)
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        # np.array, not np.ascontiguousarray: the latter turns a 0-d scalar (a Loop condition, Range bounds) into [1]
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, n_out: int = 1, **attrs) -> list[str]:
        outputs = [self.name(f"{hint}_out{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(hint), **attrs))
        return outputs


def native_support(cell_cls: type, topology_cls: type) -> str | None:
    """None if a native sequence graph can be built for this cell and topology, else the reason not."""
    if not (isinstance(topology_cls, type) and issubclass(topology_cls, (Stacked, Bidirectional))):
        return f"topology '{getattr(topology_cls, '__name__', topology_cls)}' has no native ONNX form"
    if cell_cls not in OP_TYPE:
        return f"cell '{getattr(cell_cls, '__name__', cell_cls)}' has no native ONNX operator"
    return None


def sequence_support(cell_cls: type, topology_cls: type) -> str | None:
    """None if :func:`emit_topology` can build this topology (native operators, or Loops over the
    exported cell for other cells), else the reason not."""
    if not (isinstance(topology_cls, type) and issubclass(topology_cls, (Stacked, Bidirectional))):
        return f"topology '{getattr(topology_cls, '__name__', topology_cls)}' has no ONNX sequence form"
    return None


def supports(topology: Topology) -> str | None:
    """None if every layer of ``topology`` has a native operator, else the reason not."""
    return native_support(*_cell_and_topology(topology))


def _weights(cell: FusedCell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [G·H, I], R [G·H, H], B [2·G·H] in ONNX gate order."""
    f, h = cell.fused, cell.hidden_size
    order = GATE_ORDER[type(cell)]

    def reorder(t: torch.Tensor) -> np.ndarray:
        blocks = t.detach().cpu().float().numpy().reshape(len(order), h, *t.shape[1:])
        return blocks[order].reshape(len(order) * h, *t.shape[1:])

    w, r = reorder(f.weight_ih_l0), reorder(f.weight_hh_l0)
    if f.bias:
        b = np.concatenate([reorder(f.bias_ih_l0), reorder(f.bias_hh_l0)])
    else:
        b = np.zeros(2 * len(order) * h, dtype=np.float32)
    return w, r, b


def _rnn_layer(g: GraphBuilder, cells: list[FusedCell], x: str, seq_lens: str, layer: int,
               initial: list[str]) -> tuple[str, list[str]]:
    """One native operator over ``x`` [T, B, I] for 1 or 2 directions. Returns Y [T, D, B, H] and final states [D, B, H]."""
    cls = type(cells[0])
    if cls not in OP_TYPE:
        return _loop_layer(g, cells, x, seq_lens, layer, initial)
    ws, rs, bs = zip(*(_weights(c) for c in cells))
    hidden = cells[0].hidden_size
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if len(cells) == 2 else "forward"}
    if cls is GRUCell:
        attrs["linear_before_reset"] = 1  # torch applies the reset gate after the hidden matmul
    if cls is VanillaRNNCell:
        act = "Tanh" if cells[0].activation is torch.tanh else "Relu"
        attrs["activations"] = [act] * len(cells)
    inputs = [x, g.const(f"W{layer}", np.stack(ws)), g.const(f"R{layer}", np.stack(rs)), g.const(f"B{layer}", np.stack(bs)), seq_lens,
              *initial]  # initial_h (and initial_c): absent means zeros
    n_states = len(cls.state_names)
    outs = g.op(OP_TYPE[cls], inputs, f"{OP_TYPE[cls].lower()}{layer}", n_out=1 + n_states, **attrs)
    return outs[0], outs[1:]


class _CellStep(torch.nn.Module):
    """One cell, one step: ``(x_t [B, I], *state [B, H]) -> new state``, for export as a Loop body."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.cell(x_t, tuple(state)))


def _export_cell(g: GraphBuilder, cell, prefix: str) -> onnx.GraphProto:
    """The cell as an ONNX graph (inputs ``x``, ``state_in.<n>``; outputs ``<prefix>state_out.<n>``) with
    every other name prefixed; its weights become initializers of the outer graph."""
    import tempfile
    from pathlib import Path

    from seqpipe.onnx.export import export_module

    names = list(cell.state_names)
    batch = torch.export.Dim("batch", min=1)
    args = (torch.zeros(2, cell.input_size), *(torch.zeros(2, cell.hidden_size) for _ in names))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.onnx"
        export_module(_CellStep(cell.eval().cpu()).eval(), args, path, input_names=["x", *(f"state_in.{n}" for n in names)],
                      output_names=[f"state_out.{n}" for n in names], dynamic_shapes=({0: batch}, tuple({0: batch} for _ in names)),
                      opset=g.opset, exporter="dynamo")
        model = onnx.load(str(path))
    known = {(f.domain, f.name, getattr(f, "overload", "")) for f in g.functions}
    g.functions += [f for f in model.functions if (f.domain, f.name, getattr(f, "overload", "")) not in known]
    graph = model.graph
    keep = {i.name for i in graph.input}

    def renamed(name: str) -> str:
        return name if not name or name in keep else prefix + name

    for init in graph.initializer:
        g.initializers.append(numpy_helper.from_array(numpy_helper.to_array(init), prefix + init.name))
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [renamed(i) for i in node.input]
        node.output[:] = [renamed(o) for o in node.output]
    return graph


def _reverse_index(g: GraphBuilder, x: str, seq_lens: str) -> str:
    """[T, B, 1] int64 time indices that reverse each sequence within its length (padding stays put);
    ``seq_lens`` int64 [B]."""
    time = g.op("Shape", [x], "time", start=0, end=1)[0]  # [1]
    steps = g.op("Range", [g.const("zero", np.array(0, np.int64)), g.op("Squeeze", [time], "time_scalar")[0],
                           g.const("one", np.array(1, np.int64))], "steps")[0]  # [T]
    t = g.op("Unsqueeze", [steps, g.const("axis1", np.array([1], np.int64))], "t_col")[0]  # [T, 1]
    lengths = g.op("Unsqueeze", [seq_lens, g.const("axis0", np.array([0], np.int64))], "len_row")[0]  # [1, B] int64
    back = g.op("Sub", [g.op("Sub", [lengths, g.const("one", np.array(1, np.int64))], "last")[0], t], "back")[0]  # [T, B]
    index = g.op("Where", [g.op("Less", [t, lengths], "inside")[0], back,
                           g.op("Expand", [t, g.op("Shape", [back], "tb")[0]], "t_tb")[0]], "rev_index")[0]
    return g.op("Unsqueeze", [index, g.const("axis2", np.array([2], np.int64))], "rev_index3")[0]  # [T, B, 1]


def _gather_time(g: GraphBuilder, values: str, index: str) -> str:
    """values [T, B, F] reordered along time by ``index`` [T, B, 1]."""
    full = g.op("Expand", [index, g.op("Shape", [values], "values_shape")[0]], "index_full")[0]
    return g.op("GatherElements", [values, full], "reordered", axis=0)[0]


def _cell_loop(g: GraphBuilder, cell, x: str, seq_lens: str, initial: list[str], prefix: str) -> tuple[str, list[str]]:
    """An ONNX Loop stepping ``cell`` over ``x`` [T, B, I]: (outputs [T, B, H], zero past each
    length; final states [B, H] each, frozen at each sequence's length)."""
    names = list(cell.state_names)
    body = _export_cell(g, cell, prefix)
    carry_in = {f"state_in.{n}": f"{prefix}carry_in.{n}" for n in names}
    nodes = [helper.make_node("Gather", [x, f"{prefix}t"], [f"{prefix}x_t"], axis=0, name=f"{prefix}x_at_t"),
             helper.make_node("Less", [f"{prefix}t", seq_lens], [f"{prefix}alive"], name=f"{prefix}alive"),
             helper.make_node("Unsqueeze", [f"{prefix}alive", g.const("axis1", np.array([1], np.int64))], [f"{prefix}alive2"],
                              name=f"{prefix}alive2")]
    for node in body.node:
        node.input[:] = [f"{prefix}x_t" if i == "x" else carry_in.get(i, i) for i in node.input]
        nodes.append(node)
    for n in names:
        nodes.append(helper.make_node("Where", [f"{prefix}alive2", f"{prefix}state_out.{n}", carry_in[f"state_in.{n}"]],
                                      [f"{prefix}carry_out.{n}"], name=f"{prefix}keep_{n}"))
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes += [helper.make_node("Shape", [f"{prefix}state_out.{names[0]}"], [f"{prefix}h_shape"], name=f"{prefix}h_shape"),
              helper.make_node("ConstantOfShape", [f"{prefix}h_shape"], [f"{prefix}h_zero"], value=zero, name=f"{prefix}h_zero"),
              helper.make_node("Where", [f"{prefix}alive2", f"{prefix}state_out.{names[0]}", f"{prefix}h_zero"], [f"{prefix}y_t"],
                               name=f"{prefix}y_t"),
              helper.make_node("Identity", [f"{prefix}cond_in"], [f"{prefix}cond_out"], name=f"{prefix}cond")]
    graph = helper.make_graph(
        nodes, f"{prefix}body",
        [helper.make_tensor_value_info(f"{prefix}t", TensorProto.INT64, []),
         helper.make_tensor_value_info(f"{prefix}cond_in", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(carry_in[f"state_in.{n}"], TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info(f"{prefix}cond_out", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(f"{prefix}carry_out.{n}", TensorProto.FLOAT, None) for n in names]
        + [helper.make_tensor_value_info(f"{prefix}y_t", TensorProto.FLOAT, None)])
    time = g.op("Squeeze", [g.op("Shape", [x], "loop_time", start=0, end=1)[0]], "loop_trips")[0]
    outs = g.op("Loop", [time, g.const("true", np.array(True)), *initial], f"{prefix}loop", n_out=len(names) + 1, body=graph)
    return outs[-1], outs[:-1]  # outputs [T, B, H], final states


def _loop_layer(g: GraphBuilder, cells: list, x: str, seq_lens: str, layer: int, initial: list[str]) -> tuple[str, list[str]]:
    """Like :func:`_rnn_layer`, for cells without a native operator: one Loop per direction.
    ``initial``: per state [D, B, H] (empty for zeros). Returns Y [T, D, B, H] and finals [D, B, H] each."""
    names = list(cells[0].state_names)
    hidden = cells[0].hidden_size
    if initial:
        per_dir = [[g.op("Gather", [state, g.const("d", np.array(d, np.int64))], f"init_d{d}", axis=0)[0] for state in initial]
                   for d in range(len(cells))]  # [B, H] each
    else:
        batch = g.op("Shape", [x], "batch_size", start=1, end=2)[0]
        shape = g.op("Concat", [batch, g.const("hidden", np.array([hidden], np.int64))], "bh", axis=0)[0]
        zeros = g.op("ConstantOfShape", [shape], "zeros_bh", value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))[0]
        per_dir = [[zeros for _ in names] for _ in cells]
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
        ys.append(g.op("Unsqueeze", [y, g.const("axis1", np.array([1], np.int64))], "y_dir")[0])  # [T, 1, B, H]
        finals.append([g.op("Unsqueeze", [f, g.const("axis0", np.array([0], np.int64))], "final_dir")[0] for f in final])
    y = ys[0] if len(ys) == 1 else g.op("Concat", ys, "y_dirs", axis=1)[0]
    states = [parts[0] if len(parts) == 1 else g.op("Concat", list(parts), "finals", axis=0)[0] for parts in zip(*finals)]
    return y, states


def _layer_initial(g: GraphBuilder, states: list[str] | None, slots: list[int]) -> list[str]:
    """One layer's initial states, [D, B, H] each, sliced from the full [B, S, H] states ([] for zeros)."""
    if states is None:
        return []
    out = []
    for state in states:
        part = g.op("Slice", [state, g.const("start", np.array([slots[0]], np.int64)), g.const("end", np.array([slots[-1] + 1], np.int64)),
                              g.const("axis1", np.array([1], np.int64))], "layer_slots")[0]  # [B, D, H]
        out.append(g.op("Transpose", [part], "dbh", perm=[1, 0, 2])[0])
    return out


def optional_state_inputs(g: GraphBuilder, names: tuple[str, ...], defaults: dict[str, np.ndarray], batch_of: str) -> list[str]:
    """Graph inputs ``state_in.<name>`` that a caller may omit: each has an initializer of the same
    name ([1, S, H], the served initial state), which onnxruntime uses unless the input is fed, and
    is broadcast to the batch of ``batch_of``. Returns the [B, S, H] tensors."""
    batch = g.op("Shape", [batch_of], "batch_size", start=0, end=1)[0]  # [1]
    out = []
    for name in names:
        value = np.asarray(defaults[name], np.float32)[None]  # [1, S, H]
        g.initializers.append(numpy_helper.from_array(value, f"state_in.{name}"))
        shape = g.op("Concat", [batch, g.const("slots_hidden", np.array(value.shape[1:], np.int64))], "state_shape", axis=0)[0]
        out.append(g.op("Expand", [f"state_in.{name}", shape], f"initial_{name}")[0])
    return out


def emit_topology(g: GraphBuilder, topology: Topology, x: str, seq_lens: str,
                  initial_states: list[str] | None = None) -> tuple[str, list[str], str]:
    """``x`` [T, B, I] → (summary [B, output_size], final states each [B, slots, H], the last
    layer's outputs at every step [T, B, output_size], zero past each length).

    ``initial_states``: names of [B, slots, H] tensors in ``state_names`` order (None: zeros).
    """
    reason = sequence_support(*_cell_and_topology(topology))
    if reason:
        raise ExportError(f"no sequence graph: {reason}; export the step graph instead.")
    if isinstance(topology, Stacked):
        layers = [[c] for c in topology.cells]
    else:
        layers = [[f, b] for f, b in zip(topology.forward_cells, topology.backward_cells)]
    merge = getattr(topology, "merge", "concat")
    finals: list[list[str]] = []
    for index, cells in enumerate(layers):
        slots = list(range(index * len(cells), (index + 1) * len(cells)))
        initial = _layer_initial(g, initial_states, slots)
        y, states = _rnn_layer(g, cells, x, seq_lens, index, initial)  # y: [T, D, B, H]
        finals.append(states)
        if len(cells) == 1:
            x = g.op("Squeeze", [y, g.const("axis1", np.array([1], np.int64))], "squeeze")[0]  # [T, B, H]
        elif merge == "sum":
            x = g.op("ReduceSum", [y, g.const("axis1", np.array([1], np.int64))], "sum", keepdims=0)[0]
        else:
            t = g.op("Transpose", [y], "to_tbdh", perm=[0, 2, 1, 3])[0]  # [T, B, D, H]
            x = g.op("Reshape", [t, g.const("tb_flat", np.array([0, 0, -1], np.int64))], "concat_dirs")[0]
    # final states: per layer [D, B, H] -> all slots [S, B, H] -> batch-first [B, S, H]
    state_out = []
    for k in range(len(finals[0])):
        parts = [f[k] for f in finals]
        stacked = g.op("Concat", parts, "slots", axis=0)[0] if len(parts) > 1 else parts[0]
        state_out.append(g.op("Transpose", [stacked], "batch_first", perm=[1, 0, 2])[0])
    # summary: the last layer's final h of each direction, merged like the outputs
    last_h = finals[-1][0]  # [D, B, H]
    if len(layers[-1]) == 1:
        summary = g.op("Squeeze", [last_h, g.const("axis0", np.array([0], np.int64))], "summary")[0]
    elif merge == "sum":
        summary = g.op("ReduceSum", [last_h, g.const("axis0", np.array([0], np.int64))], "summary", keepdims=0)[0]
    else:
        t = g.op("Transpose", [last_h], "summary_bdh", perm=[1, 0, 2])[0]
        summary = g.op("Reshape", [t, g.const("b_flat", np.array([0, -1], np.int64))], "summary")[0]
    return summary, state_out, x


def sequence_graph(model, opset: int, y_size: int, name: str) -> onnx.ModelProto:
    """The native sequence graph of a :class:`seqpipe.models.SequenceModel`.

    Inputs: ``x`` — token ids [batch, time] (int64) or features [batch, time, F] (float32) —,
    ``lengths`` [batch], optional ``state_in.*`` [batch, slots, hidden] (default: the served initial
    state). Outputs: ``y`` — [batch, time, y_size] when the model is per-step, else [batch, y_size]
    after each sequence's last step — and ``state_out.*``.
    """
    g = GraphBuilder(opset=opset)
    lengths32 = g.op("Cast", ["lengths"], "lengths_i32", to=TensorProto.INT32)[0]
    if model.token_input:
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])
        embedded = g.op("Gather", [g.const("embedding", model.embed[0].weight.detach().numpy()), "x"], "embed")[0]  # [B, T, E]
    else:
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", model.body_input_size])
        embedded = "x"
    time_major = g.op("Transpose", [embedded], "time_major", perm=[1, 0, 2])[0]  # [T, B, E]
    initial = optional_state_inputs(g, model.state_names, model.initial.served_values(), "x")
    summary, states, outputs = emit_topology(g, model.body, time_major, lengths32, initial)
    weight_t = g.const("head_w_t", model.head.weight.detach().numpy().T.copy())  # [O, C]
    bias = g.const("head_b", model.head.bias.detach().numpy())
    if model.per_step:
        batch_major = g.op("Transpose", [outputs], "batch_major", perm=[1, 0, 2])[0]  # [B, T, O]
        logits = g.op("Add", [g.op("MatMul", [batch_major, weight_t], "head")[0], bias], "head_bias")[0]  # [B, T, C]
        y_shape = ["batch", "time", y_size]
    else:
        logits = g.op("Add", [g.op("MatMul", [summary, weight_t], "head")[0], bias], "head_bias")[0]  # [B, C]
        y_shape = ["batch", y_size]
    _emit_outputs(g, model, logits, states)
    shape = ["batch", model.num_slots, model.hidden_size]
    graph = helper.make_graph(
        g.nodes, name,
        [x_info, helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
        + [helper.make_tensor_value_info(f"state_in.{n}", TensorProto.FLOAT, ["state_batch", model.num_slots, model.hidden_size])
           for n in model.state_names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
        + [helper.make_tensor_value_info(f"state_out.{n}", TensorProto.FLOAT, shape) for n in model.state_names],
        initializer=g.initializers)
    return finish_model(g, graph, opset)


def _emit_outputs(g: GraphBuilder, model, logits: str, states: list[str]) -> None:
    """The graph outputs: ``y`` (probabilities or values, per the model's output) and ``state_out.*``."""
    if model.output == "softmax":
        g.nodes.append(helper.make_node("Softmax", [logits], ["y"], axis=-1, name="probabilities"))
    else:
        g.nodes.append(helper.make_node("Identity", [logits], ["y"], name="values"))
    for state_name, state in zip(model.state_names, states):
        g.nodes.append(helper.make_node("Identity", [state], [f"state_out.{state_name}"], name=f"state_out_{state_name}"))


def native_step_support(model) -> str | None:
    """None when ``model``'s step graph can be built from native operators; else why not."""
    from seqpipe.models import SequenceModel

    if not isinstance(model, SequenceModel) or type(model).step is not SequenceModel.step:
        return f"{type(model).__name__} is not a plain SequenceModel"
    if not getattr(model.body, "causal", True):
        return "the topology is not causal"
    return supports(model.body)


def _cell_and_topology(topology: Topology) -> tuple[type, type]:
    cells = list(topology.cells) if isinstance(topology, Stacked) else list(getattr(topology, "forward_cells", [None]))
    return type(cells[0]), type(topology)


def step_graph(model, opset: int, name: str) -> onnx.ModelProto:
    """The step graph of a causal :class:`seqpipe.models.SequenceModel` of built-in cells, built from
    the same native RNN/GRU/LSTM operators as its sequence graph, run for one time step.

    Same contract as the traced step graph: inputs ``x`` — token ids [batch] (int64) or features
    [batch, F] (float32) — and ``state_in.*`` [batch, slots, hidden]; outputs ``y`` [batch, size]
    and ``state_out.*``. onnxruntime runs each layer as one fused kernel; the graph is written in
    milliseconds without tracing (a torch.onnx export of the step takes 1-3 s) and does not depend
    on how a torch.onnx version traces the cell. Served speed matches the traced graph on CPU
    (benchmarks/serving.py, "step graph" rows).
    """
    g = GraphBuilder(opset=opset)
    if model.token_input:
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch"])
        embedded = g.op("Gather", [g.const("embedding", model.embed[0].weight.detach().numpy()), "x"], "embed")[0]  # [B, E]
    else:
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", model.body_input_size])
        embedded = "x"
    one_step = g.op("Unsqueeze", [embedded, g.const("axis0", np.array([0], np.int64))], "one_step")[0]  # [1, B, E]
    # no sequence_lens: every sequence runs its one step
    summary, states, _ = emit_topology(g, model.body, one_step, "", [f"state_in.{n}" for n in model.state_names])
    logits = g.op("Gemm", [summary, g.const("head_w", model.head.weight.detach().numpy()), g.const("head_b", model.head.bias.detach().numpy())],
                  "head", transB=1)[0]  # [B, C]
    _emit_outputs(g, model, logits, states)
    shape = ["batch", model.num_slots, model.hidden_size]
    graph = helper.make_graph(
        g.nodes, name,
        [x_info] + [helper.make_tensor_value_info(f"state_in.{n}", TensorProto.FLOAT, shape) for n in model.state_names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", model.head.out_features])]
        + [helper.make_tensor_value_info(f"state_out.{n}", TensorProto.FLOAT, shape) for n in model.state_names],
        initializer=g.initializers)
    return finish_model(g, graph, opset)


def finish_model(g: GraphBuilder, graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """The model around ``graph``, with the functions and opset imports its exported cells need."""
    imports = {"": opset}
    for f in g.functions:
        for imp in f.opset_import:
            imports.setdefault(imp.domain, imp.version)
        imports.setdefault(f.domain, 1)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports.items()], ir_version=IR_VERSION)
    model.functions.extend(g.functions)
    return model
