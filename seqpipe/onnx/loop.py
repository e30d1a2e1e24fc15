"""The one masked ONNX ``Loop``, and the whole-sequence graph of any causal model built from it.

Every Loop seqpipe writes — around a model's step graph, or around one exported cell inside a
sequence graph — steps ``t`` over the time axis with the same body: read ``x`` at ``t``, run the
step, and let sequences whose length has passed keep their state (``t < lengths``), their last
output, and a zero output from then on. So ragged batches are exact, and the time axis (the
loop's trip count) is dynamic by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import NodeProto, TensorProto

from seqpipe.errors import ExportError
from seqpipe.onnx.builder import (
    GraphBuilder,
    float_zero,
    model_of,
    optional_state_inputs,
    renamed_initializer,
    tensor_info,
)
from seqpipe.signature import state_input, state_output

# build_step(x_t, states) -> (body nodes, new states, y): one step, reading the given names
StepBuilder = Callable[[str, list[str]], tuple[list[NodeProto], list[str], str]]


def masked_loop(
    g: GraphBuilder,
    x: str,
    lengths: str,
    initial: list[str],
    build_step: StepBuilder,
    *,
    time_axis: int,
    state_ranks: list[int],
    y_rank: int,
    prefix: str,
    last_y: str | None = None,
    scan_y: bool = False,
) -> tuple[list[str], str | None, str | None]:
    """An ONNX Loop over the ``time_axis`` of ``x``, carrying the states that start at ``initial``.

    ``lengths`` int64 [B]; ``state_ranks``/``y_rank``: each state's and ``y``'s rank (batch first).
    ``last_y``: a zero tensor shaped like ``y`` to carry each sequence's last valid ``y`` in;
    ``scan_y``: also stack ``y`` at every step, zero past each length, time first [T, B, …].
    Returns (final states, last valid ``y`` or None, stacked ``y`` or None).
    """
    p = prefix
    carry_in = [f"{p}carry_in.{k}" for k in range(len(initial))]
    step_nodes, new_states, y = build_step(f"{p}x_t", carry_in)
    alive_at = {}  # rank -> alive [B, 1, …] broadcastable to a tensor of that rank
    body = GraphBuilder()  # the Loop's body: nodes with names of their own; its constants live in g
    body.node("Gather", [x, f"{p}t"], [f"{p}x_t"], f"{p}x_at_t", axis=time_axis)
    body.nodes.extend(step_nodes)
    body.node("Less", [f"{p}t", lengths], [f"{p}alive"], f"{p}alive")
    body.node("Identity", [f"{p}cond_in"], [f"{p}cond_out"], f"{p}cond")
    for rank in {*state_ranks, y_rank}:
        if rank == 1:  # [B] already: nothing to broadcast over
            alive_at[rank] = f"{p}alive"
            continue
        alive_at[rank] = f"{p}alive_r{rank}"
        axes = g.const(f"{p}alive_axes", np.arange(1, rank, dtype=np.int64))
        body.node("Unsqueeze", [f"{p}alive", axes], [alive_at[rank]], f"{p}alive_r{rank}")
    carry_out = [f"{p}carry_out.{k}" for k in range(len(initial))]
    for new, old, out, rank in zip(new_states, carry_in, carry_out, state_ranks):
        body.node("Where", [alive_at[rank], new, old], [out], f"{p}keep_{out}")
    body_in = [tensor_info(f"{p}t", TensorProto.INT64, []), tensor_info(f"{p}cond_in", TensorProto.BOOL, [])]
    body_in += [tensor_info(name, TensorProto.FLOAT, None) for name in carry_in]
    body_out = [tensor_info(f"{p}cond_out", TensorProto.BOOL, [])]
    body_out += [tensor_info(name, TensorProto.FLOAT, None) for name in carry_out]
    loop_in = [*initial]
    if last_y is not None:  # each sequence's last valid y: kept once its length has passed
        body.node("Where", [alive_at[y_rank], y, f"{p}y_in"], [f"{p}y_out"], f"{p}keep_y")
        body_in.append(tensor_info(f"{p}y_in", TensorProto.FLOAT, None))
        body_out.append(tensor_info(f"{p}y_out", TensorProto.FLOAT, None))
        loop_in.append(last_y)
    if scan_y:  # y at this step, zero once the sequence has ended; the Loop stacks these to [T, B, …]
        body.node("Shape", [y], [f"{p}y_shape"], f"{p}y_shape")
        body.node("ConstantOfShape", [f"{p}y_shape"], [f"{p}y_zero"], f"{p}y_zero", value=float_zero())
        body.node("Where", [alive_at[y_rank], y, f"{p}y_zero"], [f"{p}y_scan"], f"{p}y_at_t")
        body_out.append(tensor_info(f"{p}y_scan", TensorProto.FLOAT, None))
    time = g.op("Squeeze", [g.op("Shape", [x], f"{p}time", start=time_axis, end=time_axis + 1)[0]], f"{p}trips")[0]
    outs = g.op(
        "Loop",
        [time, g.const(f"{p}true", np.array(True)), *loop_in],
        f"{p}loop",
        n_out=len(initial) + (last_y is not None) + scan_y,
        body=body.graph(f"{p}body", body_in, body_out),
    )
    finals = outs[: len(initial)]
    rest = outs[len(initial) :]
    kept = rest.pop(0) if last_y is not None else None
    scanned = rest.pop(0) if scan_y else None
    return finals, kept, scanned


PREFIX = "step/"


def loop_sequence_graph(
    step: onnx.ModelProto, defaults: dict[str, np.ndarray], per_step: bool = False
) -> onnx.ModelProto:
    """``step``: (x, state_in.*) -> (y, state_out.*). Returns (x [B,T,…], lengths [B], optional
    state_in.*) -> (y, state_out.*), where ``y`` is each sequence's last valid output [B, …], or with
    ``per_step`` its output at every step [B, T, …] (zero past each length).

    ``defaults``: per state, [slots, size], the state a sequence starts from when the caller feeds
    no ``state_in.*`` (an initializer of the input's name); its keys are the state names.
    """
    sg = step.graph
    names = list(defaults)
    x_info, y_info = sg.input[0], sg.output[0]
    y_tail = [d.dim_value for d in y_info.type.tensor_type.shape.dim[1:]]
    if any(v <= 0 for v in y_tail):
        raise ExportError(
            f"step graph '{sg.name}': its y has a dynamic trailing dimension ({y_tail}); the sequence graph "
            "loops around the step graph and needs y's size per step fixed (batch first, then static sizes)."
        )
    g = GraphBuilder()
    g.initializers += [renamed_initializer(t, PREFIX + t.name) for t in sg.initializer]
    initial = optional_state_inputs(g, defaults, "x")

    def build_step(x_t: str, states: list[str]) -> tuple[list[NodeProto], list[str], str]:
        rename = {"x": x_t, **{state_input(n): s for n, s in zip(names, states)}}
        nodes = []
        for node in sg.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = PREFIX + node.name
            new.input[:] = [rename.get(i, PREFIX + i) if i else i for i in node.input]
            new.output[:] = [PREFIX + o if o else o for o in node.output]
            nodes.append(new)
        return nodes, [PREFIX + state_output(n) for n in names], f"{PREFIX}y"

    y0 = None
    if not per_step:
        batch = g.op("Shape", ["x"], "batch", start=0, end=1)[0]
        y_shape = g.op("Concat", [batch, g.const("y_dims", np.array(y_tail, np.int64))], "y_shape", axis=0)[0]
        y0 = g.op("ConstantOfShape", [y_shape], "y0", value=float_zero())[0]
    finals, last, scanned = masked_loop(
        g,
        "x",
        "lengths",
        initial,
        build_step,
        time_axis=1,
        state_ranks=[3] * len(names),
        y_rank=1 + len(y_tail),
        prefix="loop/",
        last_y=y0,
        scan_y=per_step,
    )
    # the loop gives the last y when asked for it (last_y), else the scanned ys
    if per_step:
        assert scanned is not None
        y = g.op("Transpose", [scanned], "batch_major", perm=[1, 0, *range(2, 2 + len(y_tail))])[0]
    else:
        assert last is not None
        y = last
    g.node("Identity", [y], ["y"], "y")
    for n, final in zip(names, finals):
        g.node("Identity", [final], [state_output(n)], f"state_out_{n}")
    x_dims = [d.dim_param or d.dim_value for d in x_info.type.tensor_type.shape.dim]
    graph = g.graph(
        "seqpipe_loop_sequence",
        [
            tensor_info("x", x_info.type.tensor_type.elem_type, ["batch", "time", *x_dims[1:]]),
            tensor_info("lengths", TensorProto.INT64, ["batch"]),
        ]
        + [tensor_info(state_input(n), TensorProto.FLOAT, ["state_batch", *np.shape(defaults[n])]) for n in names],
        [tensor_info("y", TensorProto.FLOAT, ["batch", "time", *y_tail] if per_step else ["batch", *y_tail])]
        + [tensor_info(state_output(n), TensorProto.FLOAT, ["batch", *np.shape(defaults[n])]) for n in names],
    )
    return model_of(graph, list(step.opset_import), step.ir_version, step.functions)
