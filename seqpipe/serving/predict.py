"""Predictions from exported ONNX files alone: no torch, no checkpoint, no pipeline file.

``predict(path, inputs, **options)`` reads the task from the file's ``seqpipe.spec`` and hands the
inputs to the predictor registered for that task (:mod:`seqpipe.predictor`; plugins in the
``seqpipe.serving`` entry-point group); each returns one JSON-able dict per result, with a ``line``
for people. Nothing here knows a task: each task's serving code is its own plugin (the built-in
ones in ``seqpipe/builtin/<task>/serve.py``), which encodes its inputs with the helpers below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from seqpipe.deprecation import moved_names
from seqpipe.encoding import pad_ids
from seqpipe.errors import PluginError, SeqpipeError
from seqpipe.inputs import InputEncoding
from seqpipe.plugins import SERVING, SERVING_ENTRY_POINT_GROUP, load_registry
from seqpipe.predictor import PredictOptions, Predictor
from seqpipe.registry import Registry
from seqpipe.serving.metadata import read_spec

# the built-in tasks' serving calls lived here until 0.2; each now lives with its task
__getattr__ = moved_names(
    __name__,
    {
        "load_classifier": "seqpipe.builtin.classify.serve",
        "classify": "seqpipe.builtin.classify.serve",
        "top_k": "seqpipe.builtin.classify.serve",
        "tag": "seqpipe.builtin.tag.serve",
        "History": "seqpipe.builtin.forecast.serve",
        "read_history": "seqpipe.builtin.forecast.serve",
        "forecast": "seqpipe.builtin.forecast.serve",
        "Generator": "seqpipe.builtin.generate.serve",
        "Transcriber": "seqpipe.builtin.seq2seq.serve",
    },
    removed_in="0.3",
)

_serving_registry = None


def encoding_from_spec(spec: dict[str, Any], where: str = "the export's metadata") -> InputEncoding:
    """The fitted encoding an export's metadata describes (``encoding.input``), from the encoding
    plugins of the torch-free serving group: what ``seqpipe predict`` and applications use."""
    global _serving_registry
    if _serving_registry is None:
        _serving_registry, _ = load_registry(source=SERVING)
    entry = _serving_registry.get("encoding", str(spec.get("kind")), f"{where}: encoding kind")
    return entry.obj.from_spec(spec)


def predict(
    path: str | Path,
    inputs: list[str],
    *,
    device: str = "auto",
    precision: str = "fp32",
    registry: Registry | None = None,
    **task_options: Any,
) -> list[dict[str, Any]]:
    """Run the exported model at ``path`` (a run directory or .onnx file) on ``inputs`` with its
    task's predictor; ``task_options`` are that predictor's options by name (e.g. ``steps=10`` for
    forecast, ``condition="female"`` for generate). ``registry``: a serving registry (default: a
    fresh one of the installed serving plugins)."""
    task = task_of(path)
    predictor = predictor_for(task, registry if registry is not None else load_registry(source=SERVING)[0], path)
    options = PredictOptions(device, precision, predictor.resolve_options(task, task_options))
    return predictor().predict(Path(path), list(inputs), options)


def predictor_for(task: str, registry: Registry, where: str | Path) -> type[Predictor]:
    """The predictor class registered for ``task``; ``where`` (the model path) starts the error."""
    if task not in registry.entries["predictor"] and ("predictor", task) not in registry.clashes:
        known = ", ".join(registry.names("predictor")) or "none"
        raise PluginError(
            f"{where}: task '{task}' has no registered predictor (tasks with one: {known}); install the "
            f"distribution that provides '{task}' with its serving plugin (an entry point in the "
            f"'{SERVING_ENTRY_POINT_GROUP}' group whose register_predictors hook registers '{task}')."
        )
    return registry.get("predictor", task, str(where)).obj


def spec_of(path: str | Path) -> dict[str, Any]:
    """The checked ``seqpipe.spec`` of ``path``, or of the first seqpipe file in a run directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "onnx").glob("*.onnx")) + sorted(path.glob("*.onnx"))
        if not files:
            raise SeqpipeError(
                f"{path}: no .onnx files in this directory or its onnx/ folder; pass a run directory or an .onnx file."
            )
        path = files[0]
    elif not path.exists():
        raise SeqpipeError(f"{path}: no such file or directory; pass a run directory or an .onnx file.")
    try:  # the metadata alone: no session is started to read what the file says it is
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SeqpipeError(f"{path}: not a valid ONNX model ({type(exc).__name__}).") from None
    return read_spec(proto, path)


def task_of(path: str | Path) -> str:
    """The task named in the ``seqpipe.spec`` of ``path`` (see :func:`spec_of`)."""
    return spec_of(path)["task"]


def input_column_of(spec: dict[str, Any]) -> str | None:
    """The column the input encoding of a model's ``spec`` read in training (``encoding.input.column``), if it says."""
    column = (spec.get("encoding") or {}).get("input", {}).get("column")
    return column if isinstance(column, str) else None


def encode_inputs(encoding: Any, inputs: list[Any], what: str) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """Command-line inputs encoded as training encoded them: (x padded, lengths, per input the
    length it was cut to, or None). Number vectors are given as JSON text, e.g. '[[0.1, 2], [0.3, 1]]'."""
    from seqpipe.inputs import number_vectors

    values = (
        [number_vectors(text, f"input {i}", None) for i, text in enumerate(inputs, start=1)]
        if encoding.reads == "numbers"
        else inputs
    )  # texts, or token lists already split
    for i, value in enumerate(values, start=1):
        if encoding.reads == "numbers" and value.shape[1] != encoding.size:
            raise SeqpipeError(
                f"input {i}: {value.shape[1]} numbers per step, and the model reads {encoding.size} "
                f"({', '.join(encoding.options.columns or []) or 'its features'}); give {encoding.size} per step."
            )
    cut = encoding.max_length
    cuts = [cut if cut is not None and encoding.steps(v) > cut else None for v in values]
    encoded = [encoding.encode(v) for v in values]
    if encoding.dtype == "int64":
        x, lengths = pad_ids(encoded, what)
        return x, lengths, cuts
    lengths = np.array([len(v) for v in encoded], dtype=np.int64)
    x = np.zeros((len(encoded), int(lengths.max()), encoding.size), dtype=np.float32)
    for row, v in enumerate(encoded):
        x[row, : len(v)] = v
    return x, lengths, cuts


def input_field(encoding: Any) -> str:
    """The name a result gives its input: ``series`` for number vectors, ``text`` for text."""
    return "series" if encoding.reads == "numbers" else "text"


def shown_input(encoding: Any, value: str) -> Any:
    """The input as a result shows it: number vectors as the lists they are, text as given."""
    import json

    return json.loads(value) if encoding.reads == "numbers" and isinstance(value, str) else value
