"""``seqpipe export triton RUN --out REPO``: a Triton Inference Server model repository for the
onnxruntime backend, one model per exported graph, each described from the ONNX file itself.

- Graphs read whole (sequence, encoder, decoder, init): ``dynamic_batching``; every input and
  output as the graph declares it (the batch axis implicit, ``max_batch_size``), the optional
  ``state_in.*`` inputs of a sequence graph marked optional.
- The step graph, when its first state is the same for every sequence (zeros, or learned values):
  ``sequence_batching`` with implicit state, so Triton keeps each stream's ``state_in.*`` ↔
  ``state_out.*`` on the server and starts every sequence from the initial state (zeros, or the
  learned values in ``initial_state/``); the client sends ``x`` one step at a time with Triton's
  sequence id, start and end flags. Its ``model.onnx`` is the step graph with two unused inputs
  added, ``START`` and ``READY``, the sequence batcher's control tensors. A step graph whose first
  state is computed per sequence (``init.onnx``, a condition) is exported with the client carrying
  the state, as ``seqpipe predict`` does.

Every ``config.pbtxt`` carries the graph's ``seqpipe.spec`` as the parameter ``seqpipe.spec``
(Triton's model-config endpoint returns it), and ``seqpipe.spec.json`` lies beside it.
Torch-free: it reads ONNX files only.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from seqpipe.errors import SeqpipeError
from seqpipe.serving.metadata import read_spec

TRITON_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.BOOL: "TYPE_BOOL",
}
CONTROLS = ("START", "READY")  # the sequence batcher's control inputs, int32 [batch, 1]
SERVER_STATE_RULES = ("zeros", "random", "learnable")  # first states the same for every sequence


@dataclass(frozen=True)
class Tensor:
    """One graph input or output: its name, Triton type and dims after the batch axis (-1: any)."""

    name: str
    data_type: str
    dims: list[int]


@dataclass(frozen=True)
class TritonModel:
    """What ``export_triton`` wrote for one graph."""

    name: str
    graph: str  # the seqpipe graph kind: step, sequence, encoder, …
    folder: Path
    server_state: bool  # step graph with sequence_batching and implicit state


def export_triton(
    run: Path, out: Path, *, name: str | None = None, max_batch_size: int = 64, force: bool = False
) -> list[TritonModel]:
    """Write a model repository at ``out`` for the fp32 graphs of ``run`` (a run directory)."""
    graphs = _graphs(run)
    base = _model_name(name or run.name, "--name" if name else f"{run}: its folder name")
    if out.exists() and any(out.iterdir()) and not force:
        raise SeqpipeError(
            f"{out}: exists and is not empty; choose a new --out folder, or pass --force to write into it."
        )
    if max_batch_size < 1:
        raise SeqpipeError(f"--max-batch-size {max_batch_size}: give at least 1.")
    written = []
    for path in graphs:
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # the protobuf parser's own error: one line naming the file
            raise SeqpipeError(
                f"{path}: not a valid ONNX model ({type(exc).__name__}); export the run again."
            ) from None
        spec = read_spec(proto, path)
        model_name = f"{base}-{spec['graph']}"
        folder = out / model_name
        if folder.exists():
            shutil.rmtree(folder)  # --force: this model's own folder is rewritten whole
        (folder / "1").mkdir(parents=True)
        server_state = spec["graph"] == "step" and spec.get("initial_state", {}).get("rule") in SERVER_STATE_RULES
        if server_state:
            config = _step_config(model_name, proto, spec, folder, max_batch_size)
            onnx.save(with_controls(proto), str(folder / "1" / "model.onnx"))
        else:
            config = _batched_config(model_name, proto, spec, max_batch_size)
            shutil.copyfile(path, folder / "1" / "model.onnx")
        (folder / "config.pbtxt").write_text(config, encoding="utf-8")
        (folder / "seqpipe.spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(TritonModel(model_name, spec["graph"], folder, server_state))
    return written


def _graphs(run: Path) -> list[Path]:
    if not run.is_dir():
        raise SeqpipeError(f"{run}: not a run directory; pass the folder `seqpipe run` wrote.")
    folder = run / "onnx" if (run / "onnx").is_dir() else run
    graphs = [p for p in sorted(folder.glob("*.onnx")) if p.name.count(".") == 1]  # not the int8 / fp16 copies
    if not graphs:
        raise SeqpipeError(f"{run}: no .onnx files in its onnx/ folder; pass a finished run directory.")
    return graphs


def _model_name(name: str, where: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    if not cleaned:
        raise SeqpipeError(f"{where}: {name!r} leaves no letters or digits for a Triton model name; pass --name.")
    return cleaned


def tensors(values: Any) -> list[Tensor]:
    """Graph inputs or outputs as Triton sees them with the batch axis implicit."""
    found = []
    for value in values:
        kind = value.type.tensor_type
        if kind.elem_type not in TRITON_TYPES:
            raise SeqpipeError(f"{value.name}: ONNX element type {kind.elem_type} has no Triton type here.")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        found.append(Tensor(value.name, TRITON_TYPES[kind.elem_type], dims[1:]))
    return found


def _tensor_block(tensor: Tensor, *, optional: bool = False) -> str:
    """One input or output entry; a tensor that is only the batch axis is given as [1], reshaped to []."""
    dims = tensor.dims or [1]
    reshape = "\n    reshape: { shape: [ ] }" if not tensor.dims else ""
    flag = "\n    optional: true" if optional else ""
    return (
        f"  {{\n    name: {_quoted(tensor.name)}\n    data_type: {tensor.data_type}\n"
        f"    dims: [ {', '.join(map(str, dims))} ]{reshape}{flag}\n  }}"
    )


def _header(name: str, max_batch_size: int, spec: dict[str, Any]) -> str:
    return (
        f"# written by seqpipe export triton: the {spec['graph']} graph of a '{spec['task']}' model\n"
        f'name: {_quoted(name)}\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
    )


def _parameters(spec: dict[str, Any]) -> str:
    text = _quoted(json.dumps(spec, sort_keys=True))
    return f'parameters: {{\n  key: "seqpipe.spec"\n  value: {{ string_value: {text} }}\n}}\n'


def _batched_config(name: str, proto: onnx.ModelProto, spec: dict[str, Any], max_batch_size: int) -> str:
    inputs, outputs = _io(proto, spec)
    optional = {i["name"] for i in spec.get("inputs", []) if i.get("optional")}
    return (
        _header(name, max_batch_size, spec)
        + "input [\n"
        + ",\n".join(_tensor_block(t, optional=t.name in optional) for t in inputs)
        + "\n]\n"
        + "output [\n"
        + ",\n".join(_tensor_block(t) for t in outputs)
        + "\n]\n"
        + "dynamic_batching { }\n"
        + _parameters(spec)
    )


def _step_config(name: str, proto: onnx.ModelProto, spec: dict[str, Any], folder: Path, max_batch_size: int) -> str:
    inputs, outputs = _io(proto, spec)
    states = [(s["input"], s["output"], s["name"]) for s in spec["states"]]
    carried = {i for i, _, _ in states} | {o for _, o, _ in states}
    shapes = {t.name: t for t in inputs}
    values = spec["initial_state"].get("values")  # learnable: the same first state for every sequence
    blocks = []
    for state_in, state_out, state in states:
        tensor = shapes[state_in]
        if values is not None:
            data = np.asarray(values[state], dtype="<f4")
            if list(data.shape) != tensor.dims:
                raise SeqpipeError(
                    f"{name}: the initial value of state '{state}' has shape {list(data.shape)}, the graph "
                    f"{tensor.dims}; export the run again."
                )
            (folder / "initial_state").mkdir(exist_ok=True)
            (folder / "initial_state" / state).write_bytes(data.tobytes())
            start = f"data_file: {_quoted(state)}"
        else:
            start = "zero_data: true"
        dims = ", ".join(map(str, tensor.dims))
        blocks.append(
            f"    {{\n      input_name: {_quoted(state_in)}\n      output_name: {_quoted(state_out)}\n"
            f"      data_type: TYPE_FP32\n      dims: [ {dims} ]\n      initial_state: {{\n"
            f"        data_type: TYPE_FP32\n        dims: [ {dims} ]\n        {start}\n"
            f"        name: {_quoted(state + '-start')}\n      }}\n    }}"
        )
    controls = [(c, "CONTROL_SEQUENCE_START" if c == "START" else "CONTROL_SEQUENCE_READY") for c in CONTROLS]
    control_blocks = [
        f"    {{\n      name: {_quoted(c)}\n      control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ]\n    }}"
        for c, kind in controls
    ]
    return (
        _header(name, max_batch_size, spec)
        + "input [\n"
        + ",\n".join(_tensor_block(t) for t in inputs if t.name not in carried)
        + "\n]\n"
        + "output [\n"
        + ",\n".join(_tensor_block(t) for t in outputs if t.name not in carried)
        + "\n]\n"
        + "sequence_batching {\n  max_sequence_idle_microseconds: 60000000\n"
        + "  control_input [\n"
        + ",\n".join(control_blocks)
        + "\n  ]\n"
        + "  state [\n"
        + ",\n".join(blocks)
        + "\n  ]\n}\n"
        + _parameters(spec)
    )


def _io(proto: onnx.ModelProto, spec: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's inputs (those with an initializer of their name too when the spec lists them: the
    optional ``state_in.*`` of a sequence graph, whose initializer is the default) and outputs."""
    initializers = {i.name for i in proto.graph.initializer}
    declared = {i["name"] for i in spec.get("inputs", [])}
    inputs = [v for v in proto.graph.input if v.name not in initializers or v.name in declared]
    return tensors(inputs), tensors(proto.graph.output)


def with_controls(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The step graph with the sequence batcher's ``START`` and ``READY`` control inputs (int32
    [batch, 1]) added and left unread: Triton sends them to every request of a sequence; the state
    they would reset is Triton's to keep (implicit state)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for control in CONTROLS:
        copy.graph.input.append(helper.make_tensor_value_info(control, TensorProto.INT32, ["batch", 1]))
    onnx.checker.check_model(copy)
    return copy


def _quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
