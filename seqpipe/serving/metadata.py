"""Reading an exported graph's self-description (``seqpipe.spec`` and the flat ``seqpipe.*`` keys in
its ONNX ``metadata_props``) so that a damaged or hand-edited description is refused in one line,
never served: swapped labels or a changed input dtype would give wrong answers without an error.

seqpipe writes ``seqpipe.checksum``, the SHA-256 of every other ``seqpipe.*`` key and value, beside
them; a file without it (exported by an older seqpipe) is still checked for shape. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from seqpipe.errors import SeqpipeError

SPEC_KEY = "seqpipe.spec"
CHECKSUM_KEY = "seqpipe.checksum"
REQUIRED = {"format_version": int, "graph": str, "task": str, "inputs": list, "states": list}


def checksum(props: dict[str, str]) -> str:
    """The SHA-256 of the ``seqpipe.*`` metadata (but the checksum itself), keys in sorted order."""
    digest = hashlib.sha256()
    for key in sorted(k for k in props if k.startswith("seqpipe.") and k != CHECKSUM_KEY):
        digest.update(f"{key}\0{props[key]}\0".encode())
    return digest.hexdigest()


def read_spec(proto: onnx.ModelProto, path: Path) -> dict[str, Any]:
    """``seqpipe.spec`` of ``proto`` (loaded from ``path``), refused in one line when it is missing,
    not JSON, edited after export, lacks what serving needs, or disagrees with the graph's own inputs."""
    props = {p.key: p.value for p in proto.metadata_props}
    redo = "export it again from its run (seqpipe run), or use the run directory's own copy"
    if SPEC_KEY not in props:
        raise SeqpipeError(f"{path}: has no {SPEC_KEY} metadata; it was not exported by seqpipe.")
    if CHECKSUM_KEY in props and props[CHECKSUM_KEY] != checksum(props):
        raise SeqpipeError(
            f"{path}: its seqpipe metadata was edited after export (the SHA-256 in {CHECKSUM_KEY} no longer "
            f"matches); labels or encodings changed by hand give wrong answers: {redo}."
        )
    try:
        spec = json.loads(props[SPEC_KEY])
    except json.JSONDecodeError as exc:
        raise SeqpipeError(
            f"{path}: its {SPEC_KEY} metadata is not valid JSON ({exc.msg} at character {exc.pos}); {redo}."
        ) from None
    if not isinstance(spec, dict):
        raise SeqpipeError(f"{path}: its {SPEC_KEY} metadata is not a JSON object; {redo}.")
    for key, kind in REQUIRED.items():
        if not isinstance(spec.get(key), kind):
            raise SeqpipeError(f"{path}: its {SPEC_KEY} metadata lacks '{key}' ({kind.__name__}); {redo}.")
    graph_inputs = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    for declared in spec["inputs"]:
        name, dtype = (declared.get("name"), declared.get("dtype")) if isinstance(declared, dict) else (None, None)
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            raise SeqpipeError(
                f"{path}: {SPEC_KEY} input {name!r} has dtype {dtype!r}, not a numpy dtype; {redo}."
            ) from None
        if (
            name in graph_inputs
            and graph_inputs[name]
            and onnx.helper.tensor_dtype_to_np_dtype(graph_inputs[name]) != np_dtype
        ):
            actual = onnx.helper.tensor_dtype_to_np_dtype(graph_inputs[name])
            raise SeqpipeError(
                f"{path}: {SPEC_KEY} says input {name!r} is {np_dtype}, the graph takes {actual}; {redo}."
            )
    return spec


def load_beside(proto: onnx.ModelProto, path: Path) -> None:
    """Load ``proto``'s external tensor data, only from files beside ``path`` (never the current
    folder, never elsewhere on disk): a location that names another folder is refused."""
    external = [t for t in _initializers(proto.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or Path(location).name != location or location in (".", ".."):
            raise SeqpipeError(
                f"{path}: tensor {tensor.name!r} keeps its data in {location!r}, not a file beside the model; "
                "seqpipe reads external data only from the model's own folder: move the file there and name it alone."
            )
        if not (path.parent / location).is_file():
            raise SeqpipeError(
                f"{path}: tensor {tensor.name!r} keeps its data in {location!r}, which is not beside the model "
                f"({path.parent / location}); copy it there with the model."
            )
    if external:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))


def _initializers(graph: onnx.GraphProto):
    """Every initializer, including those of subgraphs (Loop and If bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attribute.g)
            for sub in attribute.graphs:
                yield from _initializers(sub)
