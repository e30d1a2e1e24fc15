"""Parity: the exported graph must give torch's answers.

Three ways through the same test sequences are compared on every valid step's output and on the
final states: torch stepping (``model.step``), torch's whole-sequence path (fused kernels,
``model.run_sequence``), and onnxruntime stepping the exported graph. The largest absolute
difference must stay within the tolerance, or the run fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seqpipe.contracts import StepModel, masked_steps

if TYPE_CHECKING:  # runners are handed in by the caller; this module never opens a session itself
    from seqpipe.serving.runtime import SequenceRunner, StepRunner

Worst = dict[str, dict[str, dict[str, float]]]  # comparison -> output -> {"abs", "scaled"}


@torch.no_grad()
def torch_step_loop(
    model: StepModel, x: torch.Tensor, lengths: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``model.step`` over a padded batch from ``state`` (default: the initial state); finished
    sequences keep their state. y: [B, T, …]."""
    state = model.initial_state(x.shape[0]) if state is None else state
    return masked_steps(model.step, x, lengths, state)


def outputs(y: Any, names: list[str] | tuple[str, ...], states: Any) -> dict[str, np.ndarray]:
    """One way's results as compared: ``y`` and ``state.<name>`` per state (tensors or arrays, as a
    sequence in ``names`` order or a dict by name)."""
    if isinstance(states, dict):
        states = [states[n] for n in names]
    return {"y": _numpy(y), **{f"state.{n}": _numpy(s) for n, s in zip(names, states)}}


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else value


def compare(
    worst: Worst,
    label: str,
    got: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    valid: np.ndarray | None = None,
    per_step: tuple[str, ...] = ("y",),
) -> None:
    """Record the largest differences of ``got`` vs ``reference`` under ``label``; outputs named in
    ``per_step`` are compared only where ``valid`` ([B, T]) is true."""
    group = worst.setdefault(label, {})
    for key in got:
        merge(group, key, max_diff(got[key], reference[key], valid if key in per_step else None))


def three_way(
    worst: Worst,
    served: dict[str, np.ndarray],
    stepped: dict[str, np.ndarray],
    fused: dict[str, np.ndarray],
    valid: np.ndarray,
    per_step: tuple[str, ...] = ("y",),
) -> None:
    """The step-graph comparison: onnxruntime stepping vs torch stepping vs torch's fused sequence path."""
    for label, (a, b) in {
        "ort_step_vs_torch_step": (served, stepped),
        "ort_step_vs_torch_sequence": (served, fused),
        "torch_step_vs_torch_sequence": (stepped, fused),
    }.items():
        compare(worst, label, a, b, valid, per_step)


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
def check_step_parity(
    model: StepModel,
    runner: StepRunner,
    x: np.ndarray,
    lengths: np.ndarray,
    tolerance: float,
    batch_size: int = 64,
    state0: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``state0``: per state name [N, slots, size], where sequences start (a conditioned initial
    state); None starts every path from the initial state."""
    model.eval()
    names = list(model.state_names)
    worst: Worst = {}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start : start + batch_size], lengths[start : start + batch_size]
        valid = np.arange(xb.shape[1])[None, :] < lb[:, None]  # [B, T]
        xt, lt = torch.from_numpy(xb), torch.from_numpy(lb)
        sb = _rows(state0, start, start + batch_size)
        st = None if sb is None else tuple(torch.from_numpy(sb[n]) for n in names)
        y_step, s_step = torch_step_loop(model, xt, lt, st)
        y_seq, s_seq = model.run_sequence(xt, lt) if st is None else model.run_sequence(xt, lt, st)
        y_ort, _, s_ort = runner.run_padded(xb, lb, sb)
        three_way(
            worst, outputs(y_ort, names, s_ort), outputs(y_step, names, s_step), outputs(y_seq, names, s_seq), valid
        )
    return report(worst, tolerance, x, lengths, runner)


def merge(group: dict[str, dict[str, float]], key: str, diffs: tuple[float, float]) -> None:
    entry = group.setdefault(key, {"abs": 0.0, "scaled": 0.0})
    entry["abs"], entry["scaled"] = max(entry["abs"], diffs[0]), max(entry["scaled"], diffs[1])


def report(
    worst: Worst,
    tolerance: float,
    x: np.ndarray,
    lengths: np.ndarray,
    runner,
    judged: tuple[str, ...] | None = None,
    rule: str = "|onnxruntime - torch| <= tolerance * max(1, |torch|), element-wise",
) -> dict[str, Any]:
    """The parity report: passed when every compared output (or those in ``judged``) is within
    ``tolerance``; ``comparisons`` keeps every output's figures."""
    kept = [v for group in worst.values() for key, v in group.items() if judged is None or key in judged]
    max_abs = max(v["abs"] for v in kept)
    max_scaled = max(v["scaled"] for v in kept)
    return {
        "passed": bool(max_scaled <= tolerance),
        "max_abs_diff": max_abs,
        "max_scaled_diff": max_scaled,
        "rule": rule,
        "tolerance": tolerance,
        "sequences": int(len(x)),
        "max_length": int(lengths.max()),
        "min_length": int(lengths.min()),
        "runtime": {"onnxruntime_providers": runner.providers},
        "comparisons": worst,
    }


@torch.no_grad()
def check_sequence_parity(
    model: StepModel,
    runner: SequenceRunner,
    x: np.ndarray,
    lengths: np.ndarray,
    tolerance: float,
    step_runner: StepRunner | None = None,
    batch_size: int = 64,
    per_step: bool = False,
) -> dict[str, Any]:
    """onnxruntime's sequence graph vs torch's sequence path (and vs onnxruntime's step loop, when
    the model also has a step graph), on ``y`` and the final states. ``per_step``: ``y`` is
    [B, T, …] and compared at every valid step."""
    model.eval()
    names = list(model.state_names)
    worst: Worst = {}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start : start + batch_size], lengths[start : start + batch_size]
        xb = xb[:, : int(lb.max())]  # a batch as a caller would pad it: to its own longest sequence
        y_torch, s_torch = model.sequence_output(torch.from_numpy(xb), torch.from_numpy(lb))
        y_ort, s_ort = runner.run(xb, lb)
        ort = outputs(y_ort, names, s_ort)
        valid = np.arange(xb.shape[1])[None, :] < lb[:, None] if per_step else None  # [B, T]
        compare(worst, "ort_sequence_vs_torch_sequence", ort, outputs(y_torch, names, s_torch), valid)
        if step_runner is not None:
            ys, last, s_loop = step_runner.run_padded(xb, lb)
            compare(
                worst, "ort_sequence_vs_ort_step_loop", ort, outputs(ys if per_step else last, names, s_loop), valid
            )
    return report(worst, tolerance, x, lengths, runner)


def check_precision_parity(
    fp32, copy, x: np.ndarray, lengths: np.ndarray, tolerance: float, precision: str, batch_size: int = 64
) -> dict[str, Any]:
    """A reduced-precision copy (int8, fp16) against its fp32 original, both in onnxruntime, judged
    on what it answers: ``y`` after each whole sequence (a step graph is stepped through it, so error
    its state carries from step to step shows in ``y``). The final states' differences are recorded
    beside it, not judged: an int8 LSTM's cell state drifts by tenths where its answers move by
    hundredths (the test metric change, which the caller measures, says what that costs)."""
    worst: Worst = {}
    for start in range(0, len(x), batch_size):
        xb, lb = x[start : start + batch_size], lengths[start : start + batch_size]
        reference, got = (_final_outputs(runner, xb, lb) for runner in (fp32, copy))
        compare(worst, f"ort_{precision}_vs_ort_fp32", got, reference)
    return report(
        worst,
        tolerance,
        x,
        lengths,
        copy,
        judged=("y",),
        rule=f"|{precision} - fp32| <= tolerance * max(1, |fp32|), element-wise, on y (states recorded, not judged)",
    )


def state_drift(report: dict[str, Any]) -> float:
    """The largest scaled difference of a precision report's states (recorded, not judged)."""
    return max(
        (v["scaled"] for group in report["comparisons"].values() for key, v in group.items() if key != "y"), default=0.0
    )


def _final_outputs(runner: StepRunner | SequenceRunner, x: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    y, state = runner.final(x, lengths)
    return outputs(y, list(state), state)
