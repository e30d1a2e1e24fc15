"""Whole-sequence ONNX graphs built from native RNN/GRU/LSTM operators, for the built-in cells.

onnxruntime runs these operators with fused CPU (and cuDNN) kernels, they take ``sequence_lens``
so ragged batches are exact in both directions, and the time and batch axes stay dynamic, which
sidesteps two exporter traps seen with torch 2.13: a frozen time axis, and a GRU exported with the
wrong ``linear_before_reset``. Weights are copied from the cells' torch modules with the gate
order each operator expects; parity tests hold the result to torch.
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
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
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


def supports(topology: Topology) -> str | None:
    cells = list(topology.cells) if isinstance(topology, Stacked) else list(getattr(topology, "forward_cells", [None]))
    return native_support(type(cells[0]), type(topology))


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
    reason = supports(topology)
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
    g = GraphBuilder()
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
    if model.output == "softmax":
        g.nodes.append(helper.make_node("Softmax", [logits], ["y"], axis=-1, name="probabilities"))
    else:
        g.nodes.append(helper.make_node("Identity", [logits], ["y"], name="values"))
    for state_name, state in zip(model.state_names, states):
        g.nodes.append(helper.make_node("Identity", [state], [f"state_out.{state_name}"], name=f"state_out_{state_name}"))
    shape = ["batch", model.num_slots, model.hidden_size]
    graph = helper.make_graph(
        g.nodes, name,
        [x_info, helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
        + [helper.make_tensor_value_info(f"state_in.{n}", TensorProto.FLOAT, ["state_batch", model.num_slots, model.hidden_size])
           for n in model.state_names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
        + [helper.make_tensor_value_info(f"state_out.{n}", TensorProto.FLOAT, shape) for n in model.state_names],
        initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
