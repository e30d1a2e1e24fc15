"""The pooling heads of :mod:`seqpipe.pooling` as ONNX nodes, for the graphs built from layers.

Written with the same arithmetic as the torch module: the step graph updates the ``pool`` state
[B, 2, size] (slot 0 the running mean or maximum, slot 1 the count) for one step; the sequence graph
pools the topology's outputs over each sequence's valid steps, continuing from ``state_in.pool``.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from seqpipe.onnx.builder import GraphBuilder
from seqpipe.pooling import Pooling


def _slot(g: GraphBuilder, pool: str, slot: int) -> str:
    """``pool`` [B, 2, size] → slot ``slot`` [B, size]."""
    return g.op("Gather", [pool, g.const("slot", np.array(slot, np.int64))], f"pool_slot{slot}", axis=1)[0]


def _stacked(g: GraphBuilder, value: str, count: str) -> str:
    """[B, size] value and count → the [B, 2, size] ``pool`` state."""
    axis = g.const("axis1", np.array([1], np.int64))
    return g.op(
        "Concat",
        [g.op("Unsqueeze", [value, axis], "pool_value")[0], g.op("Unsqueeze", [count, axis], "pool_count")[0]],
        "pool_state",
        axis=1,
    )[0]


def _continued_max(g: GraphBuilder, earlier: str, earlier_count: str, value: str) -> str:
    """The maximum with what came before, where anything did (count > 0)."""
    seen = g.op("Greater", [earlier_count, g.const("zero_f", np.array(0.0, np.float32))], "pool_seen")[0]
    return g.op("Where", [seen, g.op("Max", [earlier, value], "pool_max_both")[0], value], "pool_max")[0]


def _reduce(g: GraphBuilder, op_type: str, x: str, hint: str) -> str:
    """``op_type`` (ReduceSum, ReduceMax) over axis 0, dropping it (ReduceMax takes its axes as an input from opset
    18)."""
    if op_type == "ReduceSum" or g.opset >= 18:
        return g.op(op_type, [x, g.const("axis0", np.array([0], np.int64))], hint, keepdims=0)[0]
    return g.op(op_type, [x], hint, axes=[0], keepdims=0)[0]


def pool_step(g: GraphBuilder, pooling: Pooling, h: str, pool: str) -> tuple[str, str]:
    """One step: the output ``h`` [B, size] joins ``pool``; (pooled [B, size], new pool state)."""
    earlier, earlier_count = _slot(g, pool, 0), _slot(g, pool, 1)
    count = g.op("Add", [earlier_count, g.const("one_f", np.array(1.0, np.float32))], "pool_count_next")[0]
    if pooling.kind == "mean":  # mean + (h - mean) / count
        change = g.op("Div", [g.op("Sub", [h, earlier], "pool_delta")[0], count], "pool_change")[0]
        mean = g.op("Add", [earlier, change], "pool_mean")[0]
        return mean, _stacked(g, mean, count)
    value = _continued_max(g, earlier, earlier_count, h)
    return value, _stacked(g, value, count)


def pool_sequence(
    g: GraphBuilder, pooling: Pooling, outputs: str, lengths: str, pool: str | None
) -> tuple[str, str | None]:
    """``outputs`` [T, B, size] (the last layer's, time-major) pooled over each sequence's
    ``lengths`` (int64 [B]) steps, continuing from ``pool``; (pooled [B, size], pool state or None)."""
    time = g.op("Shape", [outputs], "pool_time", start=0, end=1)[0]
    steps = g.op(
        "Range",
        [
            g.const("zero", np.array(0, np.int64)),
            g.op("Squeeze", [time], "pool_time_scalar")[0],
            g.const("one", np.array(1, np.int64)),
        ],
        "pool_steps",
    )[0]  # [T]
    t = g.op("Unsqueeze", [steps, g.const("axes12", np.array([1, 2], np.int64))], "pool_t")[0]  # [T, 1, 1]
    lengths_b = g.op("Unsqueeze", [lengths, g.const("axes02", np.array([0, 2], np.int64))], "pool_lengths")[
        0
    ]  # [1, B, 1]
    valid = g.op("Less", [t, lengths_b], "pool_valid")[0]  # [T, B, 1]
    if pooling.kind == "attention":
        lowest = g.const("minus_inf", np.array(-np.inf, np.float32))
        w = g.const("attention_w", pooling.score.weight.detach().numpy().T.copy())  # [size, 1]
        b = g.const("attention_b", pooling.score.bias.detach().numpy())
        scores = g.op("Add", [g.op("MatMul", [outputs, w], "attention_score")[0], b], "attention_scores")[
            0
        ]  # [T, B, 1]
        weights = g.op(
            "Softmax", [g.op("Where", [valid, scores, lowest], "attention_masked")[0]], "attention_weights", axis=0
        )[0]
        weighted = g.op("Mul", [weights, outputs], "attention_weighted")[0]
        return _reduce(g, "ReduceSum", weighted, "attention_pooled"), None
    axis0 = g.const("axis0", np.array([0], np.int64))
    count = g.op("Cast", [lengths_b], "pool_lengths_f", to=TensorProto.FLOAT)[0]  # [1, B, 1]
    count = g.op("Squeeze", [count, axis0], "pool_count_b")[0]  # [B, 1]
    count = g.op("Expand", [count, g.op("Shape", [outputs], "pool_bs", start=1, end=3)[0]], "pool_count_bs")[
        0
    ]  # [B, size]
    if pooling.kind == "mean":
        zeros = g.const("zero_f", np.array(0.0, np.float32))
        total = _reduce(g, "ReduceSum", g.op("Where", [valid, outputs, zeros], "pool_masked")[0], "pool_sum")
        if pool is not None:  # the earlier steps' sum is their mean times their count
            earlier_count = _slot(g, pool, 1)
            total = g.op(
                "Add", [g.op("Mul", [_slot(g, pool, 0), earlier_count], "pool_earlier_sum")[0], total], "pool_sum_all"
            )[0]
            count = g.op("Add", [earlier_count, count], "pool_count_all")[0]
        mean = g.op("Div", [total, count], "pool_mean")[0]
        return mean, _stacked(g, mean, count)
    lowest = g.const("minus_inf", np.array(-np.inf, np.float32))
    value = _reduce(g, "ReduceMax", g.op("Where", [valid, outputs, lowest], "pool_masked")[0], "pool_max_seq")
    if pool is not None:
        earlier_count = _slot(g, pool, 1)
        value = _continued_max(g, _slot(g, pool, 0), earlier_count, value)
        count = g.op("Add", [earlier_count, count], "pool_count_all")[0]
    return value, _stacked(g, value, count)
