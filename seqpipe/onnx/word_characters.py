"""The character-aware word representation of :mod:`seqpipe.word_characters` as ONNX nodes, for
the graphs built from layers: the same window product, ReLU, masked maximum and concatenation."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from seqpipe.onnx.builder import GraphBuilder
from seqpipe.word_characters import WIDTH, WordCharacters


def emit_word_characters(g: GraphBuilder, module: WordCharacters, x: str, rank: int) -> str:
    """``x`` int64 [..., 1 + per_word] of rank ``rank`` (2: a step, 3: a sequence) → the vectors
    [..., word_size + features] the topology reads."""
    last = np.array([rank - 1], np.int64)
    word_ids = g.op("Gather", [x, g.const("wc_word_slot", np.array(0, np.int64))], "wc_word_ids", axis=rank - 1)[0]
    words = g.op("Gather", [g.const("wc_word_embedding", _weight(module.words)), word_ids], "wc_words")[0]
    chars = g.op(
        "Slice",
        [
            x,
            g.const("wc_from", np.array([1], np.int64)),
            g.const("wc_to", np.array([1 + module.per_word], np.int64)),
            g.const("wc_axis", last),
        ],
        "wc_chars",
    )[0]  # [..., per_word]
    side = WIDTH // 2
    pads = np.zeros(2 * rank, np.int64)
    pads[rank - 1] = pads[2 * rank - 1] = side  # zero ids before the first slot and after the last
    padded = g.op("Pad", [chars, g.const("wc_pads", pads)], "wc_padded", mode="constant")[0]
    windows = g.op("Gather", [padded, g.const("wc_windows", module.windows.numpy())], "wc_windows", axis=rank - 1)[0]
    embedded = g.op("Gather", [g.const("wc_char_embedding", _weight(module.characters)), windows], "wc_embedded")[0]
    # [..., per_word, WIDTH, E] → [..., per_word, WIDTH * E]: keep the leading axes (0 copies a dimension)
    flat = g.op("Reshape", [embedded, g.const("wc_flat", np.array([0] * rank + [-1], np.int64))], "wc_flat")[0]
    product = g.op("MatMul", [flat, g.const("wc_window_w", _weight(module.window).T.copy())], "wc_window")[0]
    h = g.op(
        "Relu",
        [g.op("Add", [product, g.const("wc_window_b", module.window.bias.detach().numpy())], "wc_window_b")[0]],
        "wc_relu",
    )[0]
    real = g.op(
        "Cast",
        [g.op("Greater", [chars, g.const("wc_zero", np.array(0, np.int64))], "wc_real")[0]],
        "wc_real_f",
        to=TensorProto.FLOAT,
    )[0]
    masked = g.op(
        "Mul",
        [h, g.op("Unsqueeze", [real, g.const("wc_axis_last", np.array([rank], np.int64))], "wc_mask")[0]],
        "wc_masked",
    )[0]
    slots = rank - 1  # the per_word axis of [..., per_word, features]
    if g.opset >= 18:  # ReduceMax takes its axes as an input from opset 18
        pooled = g.op("ReduceMax", [masked, g.const("wc_slots", np.array([slots], np.int64))], "wc_pooled", keepdims=0)[
            0
        ]
    else:
        pooled = g.op("ReduceMax", [masked], "wc_pooled", axes=[slots], keepdims=0)[0]
    return g.op("Concat", [words, pooled], "wc_vectors", axis=-1)[0]


def _weight(module) -> np.ndarray:
    return module.weight.detach().numpy()
