"""int8 copies of exported graphs (onnxruntime dynamic quantization), for CPU serving.

Weights are stored as int8 and activations are quantized per call; the copy keeps the fp32
file's ``seqpipe.spec`` with ``precision: int8``. A copy is only written next to its fp32 original
and is re-checked against it (see :mod:`seqpipe.graphs`). Torch-free, like the runtime.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from seqpipe.export import write_metadata


def quantize_int8(src: Path, dst: Path) -> dict:
    """Write an int8 copy of ``src`` to ``dst``; return its spec."""
    model = onnx.load(str(src))
    spec = json.loads({p.key: p.value for p in model.metadata_props}["seqpipe.spec"])
    del model.graph.value_info[:]  # the quantizer re-infers shapes; exporter-recorded ones can contradict it
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        onnx.save(model, str(plain))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing on every call
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
    spec.update({"precision": "int8", "quantization": "onnxruntime dynamic: int8 weights, activations quantized per call",
                 "parity": {"status": "pending"}})
    write_metadata(dst, spec)
    return spec
