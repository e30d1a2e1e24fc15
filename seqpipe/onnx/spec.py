"""What every exported graph says about itself: ``seqpipe.spec`` in its ``metadata_props``.

A program in any language, with only the .onnx file, reads from it how to encode inputs, which
state tensors to carry (each with its own shape), how sequences start and how to read ``y``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

import seqpipe
from seqpipe.contracts import StepModel, Task
from seqpipe.serving.metadata import CHECKSUM_KEY, checksum
from seqpipe.signature import state_input, state_output

FORMAT_VERSION = 1


def state_shape(model: StepModel, name: str) -> list[Any]:
    """The state ``name``'s shape as graphs and specs spell it: ``["batch", slots, size]``."""
    return ["batch", *model.state_shapes[name]]


def states_spec(model: StepModel) -> list[dict[str, Any]]:
    """The states a caller carries between calls: name, shape, and the graph's input and output for it."""
    return [
        {"name": n, "shape": state_shape(model, n), "input": state_input(n), "output": state_output(n)}
        for n in model.state_names
    ]


def state_io(model: StepModel, direction: str, **extra: Any) -> list[dict[str, Any]]:
    """The graph's ``state_in.<name>`` or ``state_out.<name>`` entries (``direction`` "in"/"out"), one per state."""
    return [
        {
            "name": state_input(n) if direction == "in" else state_output(n),
            "dtype": "float32",
            "shape": state_shape(model, n),
            **extra,
        }
        for n in model.state_names
    ]


def write_metadata(path: Path, spec: dict[str, Any]) -> None:
    """Store ``seqpipe.spec`` (JSON) and flat keys for simple readers in ``metadata_props``."""
    model = onnx.load(str(path))
    flat = {
        "seqpipe.spec": json.dumps(spec, sort_keys=True),
        "seqpipe.format_version": str(spec["format_version"]),
        "seqpipe.graph": spec["graph"],
        "seqpipe.task": spec["task"],
        "seqpipe.cell": spec["cell"],
        "seqpipe.topology": spec["topology"],
        "seqpipe.state_names": ",".join(s["name"] for s in spec["states"]),
        "seqpipe.initial_state": spec["initial_state"]["rule"],
    }
    labels = spec.get("encoding", {}).get("output", {}).get("labels")
    if labels is not None:
        flat["seqpipe.labels"] = json.dumps(labels)
    flat[CHECKSUM_KEY] = checksum(flat)  # serving refuses metadata edited by hand (swapped labels, another dtype)
    del model.metadata_props[:]
    for key, value in flat.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "seqpipe", seqpipe.__version__
    onnx.save(model, str(path))


def base_spec(kind: str, resolved, model: StepModel, task: Task, *, opset: int, exporter: str) -> dict[str, Any]:
    """What every graph of a run says about itself: format, task, cell, topology, sizes, encoding, states."""
    cfg = resolved.config
    return {
        "format_version": FORMAT_VERSION,
        "graph": kind,
        "task": cfg.task.name,
        "cell": cfg.model.cell,
        "cell_options": resolved.cell_options.model_dump(mode="json"),
        "topology": cfg.model.topology,
        "topology_options": resolved.topology_options.model_dump(mode="json"),
        "causal": bool(model.body.causal),
        "sizes": {
            "hidden": model.hidden_size,
            "slots": model.num_slots,
            "states": {n: size for n, (_, size) in model.state_shapes.items()},
        },
        "states": states_spec(model),
        "encoding": task.encoding_spec(),
        "opset": opset,
        "exporter": exporter,
        "parity": {"status": "pending"},
        "seqpipe_version": seqpipe.__version__,
    }


def io_shapes(task: Task) -> tuple[str, list, list]:
    """(x dtype, x shape per step after the batch axis, y shape per step after the batch axis)."""
    encoding = task.encoding_spec()
    x_dtype = encoding["input"]["dtype"]
    x_tail = [encoding["input"]["features"]] if "features" in encoding["input"] else []
    y_tail = [encoding["output"].get("size", len(encoding["output"].get("labels", [])))]
    return x_dtype, x_tail, y_tail


def graph_spec(kind: str, resolved, model: StepModel, task: Task, *, opset: int, exporter: str) -> dict[str, Any]:
    """The self-description of a step or sequence graph: everything a program needs to start, step and decode."""
    cfg = resolved.config
    x_dtype, x_tail, y_tail = io_shapes(task)
    per_step = task.sequence_y == "per_step"
    if kind == "step":
        inputs = [{"name": "x", "dtype": x_dtype, "shape": ["batch", *x_tail]}, *state_io(model, "in")]
        y = {"name": "y", "dtype": "float32", "shape": ["batch", *y_tail]}
    else:
        inputs = [
            {"name": "x", "dtype": x_dtype, "shape": ["batch", "time", *x_tail]},
            {"name": "lengths", "dtype": "int64", "shape": ["batch"]},
            *state_io(
                model, "in", optional=True, default="the initial state (initial_state rule), broadcast to the batch"
            ),
        ]
        y = {
            "name": "y",
            "dtype": "float32",
            "shape": ["batch", "time", *y_tail] if per_step else ["batch", *y_tail],
            "read": "every valid step (padding unspecified)" if per_step else "after each sequence's last step",
        }
    spec = base_spec(kind, resolved, model, task, opset=opset, exporter=exporter)
    spec.update(
        {
            "inputs": inputs,
            "outputs": [y, *state_io(model, "out")],
            "initial_state": model.initial.spec()
            if kind == "step"
            else {
                "rule": cfg.model.initial_state,
                "note": "built in as the default of the optional state_in.* inputs; "
                "feed state_in.* to continue sequences from a state",
            },
        }
    )
    return spec
