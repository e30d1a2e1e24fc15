"""Parity: the exported graph must give torch's answers.

Three ways through the same test sequences are compared on every valid step's output and on the
final states: torch stepping (``model.step``), torch's whole-sequence path (fused kernels,
``model.run_sequence``), and onnxruntime stepping the exported graph. The largest absolute
difference must stay within the tolerance, or the run fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqpipe.contracts import StepModel
from seqpipe.serving.runtime import SequenceRunner, StepRunner


@torch.no_grad()
def torch_step_loop(model: StepModel, x: torch.Tensor, lengths: torch.Tensor,
                    state: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``model.step`` over a padded batch from ``state`` (default: the initial state); finished
    sequences keep their state. y: [B, T, …]."""
    state = model.initial_state(x.shape[0]) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, new = model.step(x[:, t], state)
        alive = t < lengths
        state = tuple(torch.where(alive.view(-1, 1, 1), n, o) for n, o in zip(new, state))
        ys.append(y)
    return torch.stack(ys, dim=1), state


def max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(max absolute difference, max difference scaled by max(1, |reference|)).

    The scaled figure is what the tolerance judges: absolute for values up to 1 (probabilities,
    tanh-bounded ``h``), relative beyond, because an LSTM's ``c`` can grow to tens, where fp32's
    own spacing (3.8e-6 at 40) leaves no room for a fixed 1e-5 after many steps.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a - b)
    scaled = diff / np.maximum(1.0, np.abs(b))
    if mask is not None:
        diff, scaled = diff[mask], scaled[mask]
    return (float(diff.max()), float(scaled.max())) if diff.size else (0.0, 0.0)


def _rows(state0: dict[str, np.ndarray] | None, start: int, stop: int) -> dict[str, np.ndarray] | None:
    return None if state0 is None else {n: v[start:stop] for n, v in state0.items()}


@torch.no_grad()
def check_step_parity(model: StepModel, runner: StepRunner, x: np.ndarray, lengths: np.ndarray, tolerance: float,
                      batch_size: int = 64, state0: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``state0``: per state name [N, slots, hidden], where sequences start (a conditioned initial
    state); None starts every path from the initial state."""
    model.eval()
    names = list(model.state_names)
    worst: dict[str, dict[str, dict[str, float]]] = {"ort_step_vs_torch_step": {}, "ort_step_vs_torch_sequence": {},
                                                     "torch_step_vs_torch_sequence": {}}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start:start + batch_size], lengths[start:start + batch_size]
        valid = np.arange(xb.shape[1])[None, :] < lb[:, None]  # [B, T]
        xt, lt = torch.from_numpy(xb), torch.from_numpy(lb)
        sb = _rows(state0, start, start + batch_size)
        st = None if sb is None else tuple(torch.from_numpy(sb[n]) for n in names)
        y_step, s_step = torch_step_loop(model, xt, lt, st)
        y_seq, s_seq = model.run_sequence(xt, lt) if st is None else model.run_sequence(xt, lt, st)
        y_ort, _, s_ort = runner.run_padded(xb, lb, sb)
        torch_step = {"y": y_step.numpy(), **{f"state.{n}": s.numpy() for n, s in zip(names, s_step)}}
        torch_seq = {"y": y_seq.numpy(), **{f"state.{n}": s.numpy() for n, s in zip(names, s_seq)}}
        ort = {"y": y_ort, **{f"state.{n}": s_ort[n] for n in names}}
        for label, (a, b) in {"ort_step_vs_torch_step": (ort, torch_step), "ort_step_vs_torch_sequence": (ort, torch_seq),
                              "torch_step_vs_torch_sequence": (torch_step, torch_seq)}.items():
            for key in a:
                merge(worst[label], key, max_diff(a[key], b[key], valid if key == "y" else None))
    return report(worst, tolerance, x, lengths, runner)


def merge(group: dict[str, dict[str, float]], key: str, diffs: tuple[float, float]) -> None:
    entry = group.setdefault(key, {"abs": 0.0, "scaled": 0.0})
    entry["abs"], entry["scaled"] = max(entry["abs"], diffs[0]), max(entry["scaled"], diffs[1])


def report(worst: dict[str, dict[str, dict[str, float]]], tolerance: float, x: np.ndarray, lengths: np.ndarray, runner) -> dict[str, Any]:
    max_abs = max(v["abs"] for group in worst.values() for v in group.values())
    max_scaled = max(v["scaled"] for group in worst.values() for v in group.values())
    return {
        "passed": bool(max_scaled <= tolerance),
        "max_abs_diff": max_abs,
        "max_scaled_diff": max_scaled,
        "rule": "|onnxruntime - torch| <= tolerance * max(1, |torch|), element-wise",
        "tolerance": tolerance,
        "sequences": int(len(x)),
        "max_length": int(lengths.max()),
        "min_length": int(lengths.min()),
        "runtime": {"onnxruntime_providers": runner.providers},
        "comparisons": worst,
    }


@torch.no_grad()
def check_sequence_parity(model: StepModel, runner: SequenceRunner, x: np.ndarray, lengths: np.ndarray, tolerance: float,
                          step_runner: StepRunner | None = None, batch_size: int = 64, per_step: bool = False) -> dict[str, Any]:
    """onnxruntime's sequence graph vs torch's sequence path (and vs onnxruntime's step loop, when
    the model also has a step graph), on ``y`` and the final states. ``per_step``: ``y`` is
    [B, T, …] and compared at every valid step."""
    model.eval()
    names = list(model.state_names)
    worst: dict[str, dict[str, dict[str, float]]] = {"ort_sequence_vs_torch_sequence": {}}
    if step_runner is not None:
        worst["ort_sequence_vs_ort_step_loop"] = {}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start:start + batch_size], lengths[start:start + batch_size]
        xb = xb[:, : int(lb.max())]  # a batch as a caller would pad it: to its own longest sequence
        y_torch, s_torch = model.sequence_output(torch.from_numpy(xb), torch.from_numpy(lb))
        y_ort, s_ort = runner.run(xb, lb)
        ort = {"y": y_ort, **{f"state.{n}": s_ort[n] for n in names}}
        refs = {"ort_sequence_vs_torch_sequence": {"y": y_torch.numpy(), **{f"state.{n}": s.numpy() for n, s in zip(names, s_torch)}}}
        if step_runner is not None:
            ys, last, s_loop = step_runner.run_padded(xb, lb)
            refs["ort_sequence_vs_ort_step_loop"] = {"y": ys if per_step else last, **{f"state.{n}": s_loop[n] for n in names}}
        valid = np.arange(xb.shape[1])[None, :] < lb[:, None] if per_step else None  # [B, T]
        for label, ref in refs.items():
            for key in ort:
                merge(worst[label], key, max_diff(ort[key], ref[key], valid if key == "y" else None))
    return report(worst, tolerance, x, lengths, runner)


def check_precision_parity(fp32, copy, x: np.ndarray, lengths: np.ndarray, tolerance: float, precision: str,
                           batch_size: int = 64) -> dict[str, Any]:
    """A reduced-precision copy (int8, fp16) against its fp32 original, both in onnxruntime, on
    ``y`` and the final states."""
    label = f"ort_{precision}_vs_ort_fp32"
    worst: dict[str, dict[str, dict[str, float]]] = {label: {}}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start:start + batch_size], lengths[start:start + batch_size]
        outs = []
        for runner in (fp32, copy):
            y, state = runner.final(xb, lb)
            outs.append({"y": y, **{f"state.{n}": v for n, v in state.items()}})
        for key in outs[0]:
            merge(worst[label], key, max_diff(outs[1][key], outs[0][key]))
    return report(worst, tolerance, x, lengths, copy)
