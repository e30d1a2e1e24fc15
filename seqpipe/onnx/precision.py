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

from seqpipe.onnx.spec import write_metadata


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
    spec.update({"precision": "int8", "quantization": "onnxruntime dynamic: int8 weights, activations quantized per call",
                 "parity": {"status": "pending"}})
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
        # the pooling's running statistics stay fp32: in fp16 a step count stops growing at 2048
        pooling = [node.name for node in model.graph.node if node.name.startswith("pool_")]
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=pooling)
    _sort_topologically(half.graph)  # the converter appends its input casts after their consumers
    onnx.save(half, str(dst))
    spec.update({"precision": "fp16", "conversion": "onnxruntime float16 converter: fp16 weights and arithmetic, "
                 "float32 inputs and outputs", "parity": {"status": "pending"}})
    write_metadata(dst, spec)
    return spec


def _free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {o for node in graph.node for o in node.output}
    used = set()
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
