"""Writing ONNX graphs node by node: unique names, constants, nodes with names of their own (a Loop
body's), graphs and subgraphs, the model around a graph, and the optional ``state_in.*`` inputs
every sequence graph shares. The one module of seqpipe's ONNX layer that calls ``onnx.helper``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

from seqpipe.signature import state_input, state_output

IR_VERSION = 10  # onnxruntime 1.20+ reads it; onnx would otherwise stamp its newest


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
        outputs = self.name_outputs(hint, n_out)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(hint), **attrs))
        return outputs

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        """A node whose outputs and name are given (a subgraph's, or a graph's named outputs)."""
        self.nodes.append(node_proto(op_type, inputs, outputs, name, **attrs))
        return outputs

    def initializer(self, name: str, value: np.ndarray) -> str:
        """An initializer under exactly ``name`` (an optional input's default, a copied weight)."""
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def graph(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.GraphProto:
        """The nodes and initializers so far as a graph (a model's, or a Loop's body)."""
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)

    def name_outputs(self, hint: str, n_out: int) -> list[str]:
        return [self.name(f"{hint}_out{i}") for i in range(n_out)]

    def add_functions(self, functions) -> None:
        """Functions an exported graph calls, each once."""
        known = {(f.domain, f.name, getattr(f, "overload", "")) for f in self.functions}
        self.functions += [f for f in functions if (f.domain, f.name, getattr(f, "overload", "")) not in known]


def node_proto(op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> NodeProto:
    """One node, not yet in any graph (to put in place of another)."""
    return helper.make_node(op_type, inputs, outputs, name=name, **attrs)


def tensor_info(name: str, elem_type: int, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    """A graph input's or output's name, element type (``TensorProto.FLOAT``…) and shape (None: any)."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def float_zero() -> TensorProto:
    """The one-element float zero that ``ConstantOfShape`` fills with."""
    return helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])


def model_of(
    graph: onnx.GraphProto, opset_imports: list[onnx.OperatorSetIdProto], ir_version: int, functions=()
) -> onnx.ModelProto:
    """A model around ``graph`` with exactly these opset imports, IR version and functions."""
    model = helper.make_model(graph, opset_imports=list(opset_imports), ir_version=ir_version)
    model.functions.extend(functions)
    return model


def renamed_initializer(tensor: TensorProto, name: str) -> TensorProto:
    """A copy of ``tensor`` under another name (a step graph's weights inside the Loop around it)."""
    return numpy_helper.from_array(numpy_helper.to_array(tensor), name)


def finish_model(g: GraphBuilder, graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """The model around ``graph``, with the functions and opset imports its exported cells need."""
    imports = {"": opset}
    for f in g.functions:
        for imp in f.opset_import:
            imports.setdefault(imp.domain, imp.version)
        imports.setdefault(f.domain, 1)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports.items()], ir_version=IR_VERSION
    )
    model.functions.extend(g.functions)
    return model


def optional_state_inputs(g: GraphBuilder, defaults: dict[str, np.ndarray], batch_of: str) -> list[str]:
    """Graph inputs ``state_in.<name>`` that a caller may omit: each has an initializer of the same
    name ([1, S, size], the served initial state), which onnxruntime uses unless the input is fed,
    and is broadcast to the batch of ``batch_of``. Returns the [B, S, size] tensors."""
    batch = g.op("Shape", [batch_of], "batch_size", start=0, end=1)[0]  # [1]
    out = []
    for name, default in defaults.items():
        value = np.asarray(default, np.float32)[None]  # [1, S, size]
        g.initializer(state_input(name), value)
        shape = g.op(
            "Concat", [batch, g.const("slots_size", np.array(value.shape[1:], np.int64))], "state_shape", axis=0
        )[0]
        out.append(g.op("Expand", [state_input(name), shape], f"initial_{name}")[0])
    return out


def state_value_infos(
    shapes: dict[str, tuple[int, int]], direction: str, batch: str = "batch"
) -> list[onnx.ValueInfoProto]:
    """``state_in.<name>`` or ``state_out.<name>`` (``direction`` "in"/"out") [batch, slots, size] per state."""
    return [
        tensor_info(state_input(n) if direction == "in" else state_output(n), TensorProto.FLOAT, [batch, *shape])
        for n, shape in shapes.items()
    ]
