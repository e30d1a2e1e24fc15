"""Reduced-precision copies of exported graphs: int8 for CPU serving, fp16 for GPU serving.

int8: onnxruntime dynamic quantization (weights stored as int8, activations quantized per call).
fp16: weights and arithmetic in float16 (onnxruntime's float16 converter), with the inputs and
outputs kept float32, so a copy obeys the same ONNX contract as its original and a caller swaps
files without changing a line. Each copy keeps the fp32 file's ``seqpipe.spec`` with its
``precision``; it is written only next to its fp32 original and re-checked against it (see
:mod:`seqpipe.exports`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path

import onnx

from seqpipe.onnx.builder import node_proto
from seqpipe.onnx.spec import write_metadata
from seqpipe.pooling import POOL_STATE
from seqpipe.signature import state_input, state_output


def copy_path(fp32_path: Path, precision: str) -> Path:
    """``onnx/step.onnx`` -> ``onnx/step.<precision>.onnx``."""
    return fp32_path.with_name(f"{fp32_path.stem}.{precision}.onnx")


def _spec(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["seqpipe.spec"])


@contextlib.contextmanager
def _quiet():
    """Both converters log advice (pre-processing, shape inference) on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path) -> dict:
    """Write an int8 copy of ``src`` to ``dst``; return its spec."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    spec = _spec(model)
    del model.graph.value_info[:]  # the quantizer re-infers shapes; exporter-recorded ones can contradict it
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        onnx.save(model, str(plain))
        with _quiet():
            quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8)
    spec.update(
        {
            "precision": "int8",
            "quantization": "onnxruntime dynamic: int8 weights, activations quantized per call",
            "parity": {"status": "pending"},
        }
    )
    write_metadata(dst, spec)
    return spec


def convert_fp16(src: Path, dst: Path) -> dict:
    """Write an fp16 copy of ``src`` to ``dst`` (float32 inputs and outputs kept); return its spec."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    spec = _spec(model)
    del model.graph.value_info[:]  # re-inferred by the converter, in the new types
    with _quiet():
        # keep_io_types: x, state_in.*, y and state_out.* stay float32 (the ONNX contract); casts at
        # the graph's edges are the only extra work
        # the pooling's running statistics stay fp32, from state_in.pool to state_out.pool: in fp16
        # a step count stops growing at 2048. Only in the graphs seqpipe writes from native
        # operators, whose pooling nodes it names: a traced step graph's, and the Loop body of a
        # plugin cell's sequence graph, are converted whole.
        pool_io = {state_input(POOL_STATE), state_output(POOL_STATE)}
        pooling = [
            node.name
            for node in model.graph.node
            if node.name and (node.name.startswith("pool_") or pool_io & {*node.input, *node.output})
        ]
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=pooling)
    _drop_fp16_round_trips(half.graph)
    _sort_topologically(half.graph)  # the converter appends its input casts after their consumers
    onnx.save(half, str(dst))
    spec.update(
        {
            "precision": "fp16",
            "conversion": "onnxruntime float16 converter: fp16 weights and arithmetic, float32 inputs and outputs",
            "parity": {"status": "pending"},
        }
    )
    write_metadata(dst, spec)
    return spec


def _drop_fp16_round_trips(graph: onnx.GraphProto) -> None:
    """Let fp32 values reach the fp32 (blocked) nodes without passing through fp16 on the way.

    The converter casts every float value between two blocked nodes, every graph input a blocked
    node reads and every graph output a blocked node writes, to fp16 and back (fp32 → fp16 → fp32
    rounds a count past 2048), and gives each blocked reader of one fp16 value its own cast under
    the same output name (two such readers make the graph invalid). Here each cast back to fp32 of
    a value the converter itself cast to fp16 is replaced by the fp32 original (a graph output's
    cast by an Identity of it); the casts nobody reads any more, and duplicates, go."""
    to_fp16 = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Cast" and (n.name.endswith("_cast_to_fp16_node") or n.name.startswith("graph_input_cast"))
    }  # fp16 value → fp32 source
    original = {
        n.output[0]: to_fp16[n.input[0]]
        for n in graph.node
        if n.op_type == "Cast" and n.name.endswith("_cast_to_fp32_node") and n.input[0] in to_fp16
    }
    _rename_inputs(graph, original)
    for i, node in enumerate(graph.node):  # fp32 → fp16 → the fp32 graph output: the fp32 value itself
        if node.op_type == "Cast" and node.name.startswith("graph_output_cast") and node.input[0] in to_fp16:
            graph.node[i].CopyFrom(node_proto("Identity", [to_fp16[node.input[0]]], list(node.output), node.name))
    kept, seen = [], set()
    for node in graph.node:  # identical casts the converter wrote twice: the first stays
        if node.op_type == "Cast" and node.name.endswith("_cast_to_fp32_node") and node.output[0] in seen:
            continue
        seen.update(node.output)
        kept.append(node)
    while True:  # casts whose output nobody reads (anywhere, subgraphs included) and the graph does not return
        read = _read_names(kept) | {o.name for o in graph.output}
        unread = {
            id(n)
            for n in kept
            if n.op_type == "Cast"
            and n.output[0] not in read
            and (n.name.startswith("graph_input_cast") or n.name.endswith(("_cast_to_fp32_node", "_cast_to_fp16_node")))
        }
        if not unread:
            break
        kept = [n for n in kept if id(n) not in unread]
    defined = {o for n in kept for o in n.output} | _subgraph_outputs(kept)
    infos: dict[str, onnx.ValueInfoProto] = {}
    for info in graph.value_info:  # one description per value that still exists
        if info.name in defined:
            infos.setdefault(info.name, info)
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in kept]
    del graph.node[:]
    graph.node.extend(nodes)
    values = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in infos.values()]
    del graph.value_info[:]
    graph.value_info.extend(values)


def _rename_inputs(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Every node input (in subgraphs too) named in ``names`` reads its new name instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g, names)


def _read_names(nodes: list[onnx.NodeProto]) -> set[str]:
    """Names ``nodes`` read, with what their subgraphs read from outside (or return from it)."""
    read: set[str] = set()
    for node in nodes:
        read.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                read |= _free_names(attr.g) | {o.name for o in attr.g.output}
    return read


def _subgraph_outputs(nodes: list[onnx.NodeProto]) -> set[str]:
    """Values ``nodes``' subgraphs define (the converter describes them in the main graph too)."""
    out = set()
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out |= {o for n in attr.g.node for o in n.output} | _subgraph_outputs(list(attr.g.node))
    return out


def _free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {o for node in graph.node for o in node.output}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used |= _free_names(attr.g)
    return used - defined


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes (and every subgraph's) so each comes after what it reads."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _sort_topologically(attr.g)
    produced_here = {o for node in graph.node for o in node.output}
    needs = []
    for node in graph.node:
        reads = {i for i in node.input if i}
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                reads |= _free_names(attr.g)
        needs.append(reads & produced_here)  # names from outside this graph are there from the start
    done: set[str] = set()
    order, pending = [], list(range(len(graph.node)))
    while pending:
        ready = [i for i in pending if needs[i] <= done]
        if not ready:
            raise ValueError("the fp16 graph has a cycle; please report this with the fp32 file")
        for i in ready:
            order.append(graph.node[i])
            done.update(graph.node[i].output)
        pending = [i for i in pending if i not in set(ready)]
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
    del graph.node[:]
    graph.node.extend(nodes)


def convert(src: Path, precision: str) -> tuple[Path, dict]:
    """Write ``src``'s copy in ``precision`` beside it; return its path and spec."""
    dst = copy_path(src, precision)
    return dst, (quantize_int8 if precision == "int8" else convert_fp16)(src, dst)
