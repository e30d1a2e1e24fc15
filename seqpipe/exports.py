"""Export every graph a pipeline asks for, prove each against torch, and stamp the result in.

Step graph parity: torch step, torch fused sequence and onnxruntime stepping agree on every valid
step's ``y`` and on the final states. Sequence graph parity: onnxruntime's sequence graph agrees
with torch's sequence path and, for causal models, with onnxruntime's own step loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqpipe import manifest
from seqpipe.config import PRECISIONS
from seqpipe.onnx.export import export_sequence, export_step
from seqpipe.onnx.parity import check_precision_parity, check_sequence_parity, check_step_parity, state_drift
from seqpipe.onnx.precision import convert
from seqpipe.onnx.spec import graph_spec, write_metadata
from seqpipe.serving.runtime import SequenceRunner, StepRunner

# what each file's own metadata records of its parity check (parity.json has the full report)
PARITY_SUMMARY = ("passed", "max_abs_diff", "max_scaled_diff", "tolerance", "rule", "sequences")


def export_graphs(resolved, task, model, onnx_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Write ``onnx/<graph>.onnx`` for each requested graph; return the parity report."""
    cfg = resolved.config.export
    onnx_dir.mkdir(exist_ok=True)
    reports: dict[str, dict[str, Any]] = {}
    step_runner = None
    own = [kind for kind in resolved.graphs if kind not in ("step", "sequence")]
    core = [kind for kind in resolved.graphs if kind not in own]  # "step" first: the sequence check reuses it
    if core:
        x, lengths = task.parity_inputs("test", cfg.parity_sequences)
        # where test sequences start, when the task computes it per sequence (a conditioned state)
        state0 = task.parity_start(model, "test", cfg.parity_sequences)
    for kind in core:
        path = onnx_dir / f"{kind}.onnx"
        if kind == "step":
            exporter = export_step(
                model, task.step_example(), path, opset=cfg.opset, exporter=cfg.exporter, native=cfg.native_step
            )
        else:
            step_path = onnx_dir / "step.onnx" if step_runner is not None else None
            exporter = export_sequence(task, model, path, opset=cfg.opset, step_path=step_path, exporter=cfg.exporter)
        spec = graph_spec(kind, resolved, model, task, opset=cfg.opset, exporter=exporter)
        write_metadata(path, spec)
        if kind == "step":
            step_runner = StepRunner(path, device="cpu")
            report = check_step_parity(model, step_runner, x, lengths, cfg.parity_tolerance, state0=state0)
        else:
            report = check_sequence_parity(
                model,
                SequenceRunner(path, device="cpu"),
                x,
                lengths,
                cfg.parity_tolerance,
                step_runner,
                per_step=task.sequence_y == "per_step",
            )
        reports[kind] = _stamp(path, spec, report, kind, log, cfg.parity_tolerance_reason)
    for kind in own:  # the task's own graphs (init, encoder, decoder): it exports and checks them
        path = onnx_dir / f"{kind}.onnx"
        spec, report = task.export_graph(
            kind,
            model,
            path,
            resolved=resolved,
            opset=cfg.opset,
            exporter=cfg.exporter,
            tolerance=cfg.parity_tolerance,
            limit=cfg.parity_sequences,
        )
        reports[kind] = _stamp(path, spec, report, kind, log, cfg.parity_tolerance_reason)
    for precision in PRECISIONS:
        if getattr(cfg, precision):
            for kind in [k for k in reports if k in ("step", "sequence")]:
                reports[f"{kind}.{precision}"] = _precision_copy(
                    task, onnx_dir / f"{kind}.onnx", precision, x, lengths, getattr(cfg, f"{precision}_tolerance"), log
                )
    fp32 = [r for kind, r in reports.items() if not is_precision_copy(kind)]  # torch vs onnxruntime
    manifest.record(*sorted(onnx_dir.glob("*.onnx")))  # written and stamped: served only as they are now
    return {
        "passed": all(r["passed"] for r in reports.values()),
        "max_abs_diff": max(r["max_abs_diff"] for r in fp32),  # the copies' figures are in their own reports
        "max_scaled_diff": max(r["max_scaled_diff"] for r in fp32),
        "tolerance": cfg.parity_tolerance,
        **({"tolerance_reason": cfg.parity_tolerance_reason} if cfg.parity_tolerance_reason else {}),
        "graphs": reports,
    }


def is_precision_copy(kind: str) -> bool:
    """Whether a parity report's graph kind (``step.int8``, ``sequence.fp16``) names a reduced-precision
    copy, checked against its fp32 original rather than against torch."""
    return kind.rsplit(".", 1)[-1] in PRECISIONS


def _stamp(
    path: Path,
    spec: dict[str, Any],
    report: dict[str, Any],
    kind: str,
    log: Callable[[str], None],
    reason: str | None = None,
) -> dict[str, Any]:
    """Record a graph's parity in its own metadata and say it."""
    report["file"] = f"onnx/{path.name}"
    spec["parity"] = {k: report[k] for k in PARITY_SUMMARY}
    if reason:
        spec["parity"]["tolerance_reason"] = report["tolerance_reason"] = reason
    write_metadata(path, spec)
    log(
        f"parity {kind:>8}: max |torch - onnxruntime| = {report['max_abs_diff']:.2e} (scaled by magnitude: "
        f"{report['max_scaled_diff']:.2e}) over {report['sequences']} test sequences, tolerance "
        f"{report['tolerance']:.0e}: "
        f"{'PASSED' if report['passed'] else 'FAILED'}"
    )
    return report


def _precision_copy(
    task, fp32_path: Path, precision: str, x, lengths, tolerance: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Write one graph's int8 or fp16 copy, re-check it against its fp32 original, and report the
    test metric change. int8 is a CPU serving option and is checked on CPU; fp16 is a GPU one and is
    checked on CUDA when onnxruntime can use it (on CPU otherwise, which still checks its numbers)."""
    copy_path, spec = convert(fp32_path, precision)
    cls = StepRunner if spec["graph"] == "step" else SequenceRunner
    copy = cls(copy_path)  # where it is served: int8 on CPU, fp16 on CUDA when onnxruntime can use it
    fp32 = cls(
        fp32_path, device="cuda" if copy.providers[0] == "CUDAExecutionProvider" else "cpu"
    )  # compared on the same device
    report = check_precision_parity(fp32, copy, x, lengths, tolerance, precision)
    report["file"] = f"onnx/{copy_path.name}"
    change = "metric change not measured (the task's evaluate_onnx returns None)"
    fp32_metrics = task.evaluate_onnx(fp32, "test")
    if fp32_metrics is not None:
        metrics = {"fp32": fp32_metrics, precision: task.evaluate_onnx(copy, "test")}
        metrics["change"] = {k: metrics[precision][k] - metrics["fp32"][k] for k in metrics["fp32"]}
        report["test_metrics"] = metrics
        change = "test " + ", ".join(f"{k} {v:+.4f}" for k, v in metrics["change"].items())
    spec["parity"] = {k: report[k] for k in PARITY_SUMMARY}
    spec["parity"]["against"] = f"onnx/{fp32_path.name} (fp32, onnxruntime {copy.providers[0]})"
    write_metadata(copy_path, spec)
    log(
        f"parity {spec['graph']}.{precision}: max |{precision} - fp32| on y (scaled beyond 1) = "
        f"{report['max_scaled_diff']:.2e} on {copy.providers[0]}, "
        f"tolerance {tolerance:g}: {'PASSED' if report['passed'] else 'FAILED'}; {change}; states drift up to "
        f"{state_drift(report):.2e} (recorded)"
    )
    return report
