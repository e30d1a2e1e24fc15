"""A whole-sequence graph for any causal model: an ONNX ``Loop`` whose body is its step graph.

Cells without a native ONNX operator (third-party plugins, for one) still get a sequence graph:
the exported step graph becomes the loop body, each step reads ``x[:, t]``, and sequences that
have ended keep their state and last output (``t < lengths``), so ragged batches are exact. The
time axis is the loop's trip count, so it is dynamic by construction.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PREFIX = "step/"


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def loop_sequence_graph(step: onnx.ModelProto, state_names: list[str], state_shape: list[int],
                        defaults: dict[str, np.ndarray], per_step: bool = False) -> onnx.ModelProto:
    """``step``: (x, state_in.*) -> (y, state_out.*). Returns (x [B,T,…], lengths [B], optional
    state_in.*) -> (y, state_out.*), where ``y`` is each sequence's last valid output [B, …], or with
    ``per_step`` its output at every step [B, T, …] (zero past each length: a Loop scan output).

    ``state_shape`` is [slots, hidden]; ``defaults`` per state [slots, hidden]: the state a sequence
    starts from when the caller feeds no ``state_in.*`` (an initializer of the input's name).
    """
    g = step.graph
    x_info = g.input[0]
    y_info = g.output[0]
    y_tail = [d.dim_value for d in y_info.type.tensor_type.shape.dim[1:]]
    if any(v <= 0 for v in y_tail):
        raise ValueError("the step graph's y needs static trailing dimensions to build a loop around it")

    rename = {"x": "x_t", **{f"state_in.{n}": f"carry_in.{n}" for n in state_names}}

    def renamed(name: str) -> str:
        if not name:
            return name
        return rename.get(name, PREFIX + name)

    body_nodes = [helper.make_node("Gather", ["x", "t"], ["x_t"], axis=1, name="x_at_t")]
    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = PREFIX + node.name
        del new.input[:]
        del new.output[:]
        new.input.extend(renamed(i) for i in node.input)
        new.output.extend(renamed(o) for o in node.output)
        body_nodes.append(new)
    # sequences whose length has passed keep their state and their last y
    body_nodes += [
        helper.make_node("Less", ["t", "lengths"], ["alive"], name="alive"),
        helper.make_node("Unsqueeze", ["alive", "axes_state"], ["alive_state"], name="alive_state"),
        helper.make_node("Unsqueeze", ["alive", "axes_y"], ["alive_y"], name="alive_y"),
        helper.make_node("Where", ["alive_y", PREFIX + "y", "carry_in.y"], ["carry_out.y"], name="keep_y"),
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond"),
    ]
    if per_step:  # y at this step, zero once the sequence has ended; the Loop stacks these to [T, B, …]
        zero = helper.make_tensor("zero", y_info.type.tensor_type.elem_type, [1], [0])
        body_nodes += [helper.make_node("Shape", [PREFIX + "y"], ["y_shape_t"], name="y_shape_t"),
                       helper.make_node("ConstantOfShape", ["y_shape_t"], ["y_zero"], value=zero, name="y_zero"),
                       helper.make_node("Where", ["alive_y", PREFIX + "y", "y_zero"], ["scan.y"], name="y_at_t")]
    for n in state_names:
        body_nodes.append(helper.make_node("Where", ["alive_state", PREFIX + f"state_out.{n}", f"carry_in.{n}"],
                                           [f"carry_out.{n}"], name=f"keep_{n}"))
    y_dtype = y_info.type.tensor_type.elem_type
    body = helper.make_graph(
        body_nodes, "step_body",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(f"carry_in.{n}", TensorProto.FLOAT, None) for n in state_names]
        + [helper.make_tensor_value_info("carry_in.y", y_dtype, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(f"carry_out.{n}", TensorProto.FLOAT, None) for n in state_names]
        + [helper.make_tensor_value_info("carry_out.y", y_dtype, None)]
        + ([helper.make_tensor_value_info("scan.y", y_dtype, None)] if per_step else []),
    )

    inits = [numpy_helper.from_array(numpy_helper.to_array(t), PREFIX + t.name) for t in g.initializer]
    inits += [_int64("axes_state", [1, 2]), _int64("axes_y", list(range(1, 1 + len(y_tail)))),
              _int64("state_dims", list(state_shape)), _int64("y_dims", y_tail),
              numpy_helper.from_array(np.array(True), "true")]
    nodes = [
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1, name="batch"),
        helper.make_node("Shape", ["x"], ["time_1d"], start=1, end=2, name="time"),
        helper.make_node("Squeeze", ["time_1d"], ["time"], name="time_scalar"),
        helper.make_node("Concat", ["batch", "state_dims"], ["state_shape"], axis=0, name="state_shape"),
        helper.make_node("Concat", ["batch", "y_dims"], ["y_shape"], axis=0, name="y_shape"),
        helper.make_node("ConstantOfShape", ["y_shape"], ["y0"], value=helper.make_tensor("zero", y_dtype, [1], [0]), name="y0"),
    ]
    for n in state_names:
        inits.append(numpy_helper.from_array(np.asarray(defaults[n], np.float32)[None], f"state_in.{n}"))  # [1, S, H]
        nodes.append(helper.make_node("Expand", [f"state_in.{n}", "state_shape"], [f"init.{n}"], name=f"init_{n}"))
    last_y = "y_last" if per_step else "y"
    nodes.append(helper.make_node("Loop", ["time", "true", *(f"init.{n}" for n in state_names), "y0"],
                                  [*(f"state_out.{n}" for n in state_names), last_y, *(["y_steps"] if per_step else [])],
                                  body=body, name="steps"))
    if per_step:  # [T, B, …] -> [B, T, …]
        perm = [1, 0, *range(2, 2 + len(y_tail))]
        nodes.append(helper.make_node("Transpose", ["y_steps"], ["y"], perm=perm, name="batch_major"))
    time_dims = [d.dim_param or d.dim_value for d in x_info.type.tensor_type.shape.dim]
    x_shape = ["batch", "time", *time_dims[1:]]
    graph = helper.make_graph(
        nodes, "seqpipe_loop_sequence",
        [helper.make_tensor_value_info("x", x_info.type.tensor_type.elem_type, x_shape),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
        + [helper.make_tensor_value_info(f"state_in.{n}", TensorProto.FLOAT, ["state_batch", *state_shape]) for n in state_names],
        [helper.make_tensor_value_info("y", y_dtype, ["batch", "time", *y_tail] if per_step else ["batch", *y_tail])]
        + [helper.make_tensor_value_info(f"state_out.{n}", TensorProto.FLOAT, ["batch", *state_shape]) for n in state_names],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version)
    model.functions.extend(step.functions)
    return model
