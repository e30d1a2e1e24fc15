"""seqpipe serving and training benchmark: every figure is a ratio measured in one process.

    python benchmarks/serving.py            # table
    python benchmarks/serving.py --json     # one JSON object
    python benchmarks/serving.py --quick    # fewer repetitions (smoke run)
    python benchmarks/serving.py --device cuda   # on a GPU: onnxruntime CUDA vs torch CUDA eager

Model: the seed's example sizes, an LSTM with input 300 and hidden 512, and a 10-way softmax head.
Rows (ratio > 1 means seqpipe is faster):
  step latency, batch 1 and 64   torch eager ``model.step`` / seqpipe ``Stream.step`` (IO binding)
  overhead over raw onnxruntime  seqpipe Stream / a minimal hand-written IO-binding loop, same graph
  sequence, batch 64 × 20        torch ``nn.LSTM`` (oneDNN) + head / seqpipe sequence graph (native LSTM op)
  int8 vs fp32 step, batch 64    fp32 step graph / int8 dynamically quantized step graph (raw onnxruntime)
                                 (--device cuda: fp16 instead, the GPU's reduced precision)
  training overhead              seqpipe trainer / hand-written torch loop (same model, data, epochs)
  step graph (info)              the traced step graph (torch.onnx dynamo) / the native-operator step
                                 graph seqpipe writes for built-in cells, both stepped by raw onnxruntime

With --device cuda both sides run on the GPU: torch eager on CUDA tensors, onnxruntime's CUDA
provider with the recurrent state bound on the device (IO binding, never copied to the host);
each step's ``y`` comes back to the host on both sides, as an application reading predictions has it.
Each library keeps its own TF32 choice (onnxruntime's MatMul/Gemm in fp32, as seqpipe runs them);
``benchmarks/cuda_check.sh`` runs this under NVIDIA_TF32_OVERRIDE=0, so both sides compute in fp32.

The server (`seqpipe serve`) has its own benchmark: ``python benchmarks/server.py``.

Each ratio comes from its own pair of contenders timed in alternating rounds (order flipped each
round), keeping each one's median, because this machine is shared and noisy; only ratios are
meaningful across machines. The int8 rows time raw onnxruntime sessions of the dynamic
quantization that ``[export] int8 = true`` writes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from seqpipe.builtin.cells import LSTMCell
from seqpipe.builtin.topologies import Stacked
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel
from seqpipe.onnx.export import export_step
from seqpipe.onnx.native import sequence_graph
from seqpipe.onnx.precision import convert_fp16, quantize_int8
from seqpipe.onnx.spec import write_metadata
from seqpipe.serving.runtime import StepRunner, Stream, choose_providers, session_providers

INPUT, HIDDEN, CLASSES = 300, 512, 10


def seed_classifier() -> SequenceModel:
    """The seed's ``VanillaRNN`` shape with an LSTM: numeric inputs, softmax head after the last step,
    built from seqpipe's own parts, so the graphs below are the ones a seqpipe run exports."""
    body = Stacked(LSTMCell, INPUT, HIDDEN, {}, num_layers=1)
    return SequenceModel(
        torch.nn.Identity(),
        body,
        torch.nn.Linear(HIDDEN, CLASSES),
        InitialState("zeros", body.state_shapes),
        output="softmax",
    )


def spec(graph: str) -> dict:
    state_shape = ["batch", 1, HIDDEN]
    x_shape = ["batch", INPUT] if graph == "step" else ["batch", "time", INPUT]
    return {
        "format_version": 1,
        "graph": graph,
        "task": "benchmark",
        "cell": "lstm",
        "topology": "single",
        "inputs": [{"name": "x", "dtype": "float32", "shape": x_shape}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", CLASSES]}],
        "states": [{"name": n, "shape": state_shape} for n in ("h", "c")],
        "initial_state": {"rule": "zeros"},
        "encoding": {"output": {"labels": [str(i) for i in range(CLASSES)]}},
    }


def interleaved(contenders: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per call for each contender, measured in alternating rounds."""
    samples = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(max(3, calls // 10)):
            fn()  # warm-up
    names = list(contenders)
    for round_ in range(rounds):
        # alternate the order each round: whoever runs first after another pays for its cache misses
        for name in names if round_ % 2 == 0 else names[::-1]:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(v) for name, v in samples.items()}


def raw_session(path: Path, device: str) -> ort.InferenceSession:
    """A plain onnxruntime session, as a hand-written app would open it (warnings off, as seqpipe's)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # sequence graphs' optional state_in.* draw one warning each
    return ort.InferenceSession(
        str(path), options, providers=session_providers(choose_providers(device))
    )  # as seqpipe's


def raw_iobinding_loop(session: ort.InferenceSession, batch: int, device: str = "cpu"):
    """The minimal hand-written way to step a graph with onnxruntime: the reference for overhead."""
    zeros = np.zeros((batch, 1, HIDDEN), np.float32)
    bufs = [{n: ort.OrtValue.ortvalue_from_numpy(zeros, device, 0) for n in ("h", "c")} for _ in range(2)]
    x = ort.OrtValue.ortvalue_from_numpy(np.random.default_rng(0).standard_normal((batch, INPUT)).astype(np.float32))
    y = ort.OrtValue.ortvalue_from_shape_and_type((batch, CLASSES), np.float32, device, 0)
    bindings = []
    for read in range(2):
        b = session.io_binding()
        b.bind_ortvalue_input("x", x)
        for n in ("h", "c"):
            b.bind_ortvalue_input(f"state_in.{n}", bufs[read][n])
            b.bind_ortvalue_output(f"state_out.{n}", bufs[1 - read][n])
        b.bind_ortvalue_output("y", y)
        bindings.append(b)
    flip = [0]

    x_np = np.random.default_rng(1).standard_normal((batch, INPUT)).astype(np.float32)

    def step():
        x.update_inplace(x_np)  # a new input every step, as any caller has
        session.run_with_iobinding(bindings[flip[0]])
        flip[0] ^= 1
        return y.numpy()

    return step


def bench_steps(model, step_path, reduced_path, batch, rounds, calls, device: str = "cpu") -> dict[str, float]:
    """``reduced_path``: the int8 copy (CPU) or the fp16 copy (CUDA) of the step graph."""
    runner = StepRunner(step_path, device=device)
    stream = Stream(runner, batch)
    x_np = np.random.default_rng(0).standard_normal((batch, INPUT)).astype(np.float32)
    x_t = torch.from_numpy(x_np).to(device)
    state = [model.initial_state(batch)]

    def torch_step():
        with torch.inference_mode():
            y, state[0] = model.step(x_t, state[0])
        return y.cpu().numpy() if device == "cuda" else y  # the caller reads y on the host, as from the stream

    seqpipe, raw = (lambda: stream.step(x_np)), raw_iobinding_loop(runner.session, batch, stream.device)
    reduced = raw_iobinding_loop(raw_session(reduced_path, device), batch, stream.device)
    # each comparison is its own interleaved pair, so a third contender cannot skew it
    vs_torch = interleaved({"torch": torch_step, "seqpipe": seqpipe}, rounds, calls)
    vs_raw = interleaved({"seqpipe": seqpipe, "raw_ort": raw}, rounds, calls)
    vs_reduced = interleaved({"raw_ort": raw, "raw_ort_reduced": reduced}, rounds, calls)
    return {
        "torch": vs_torch["torch"],
        "seqpipe": vs_torch["seqpipe"],
        "seqpipe_vs_raw": vs_raw["seqpipe"],
        "raw_ort": vs_raw["raw_ort"],
        "fp32": vs_reduced["raw_ort"],
        "reduced": vs_reduced["raw_ort_reduced"],
    }


def bench_step_graphs(native_path, traced_path, batch, rounds, calls, device: str = "cpu") -> dict[str, float]:
    """The two ways to write the same step graph, stepped the same way (raw IO binding)."""
    loops = {
        kind: raw_iobinding_loop(raw_session(path, device), batch, device)
        for kind, path in (("native", native_path), ("traced", traced_path))
    }
    return interleaved(loops, rounds, calls)


def bench_sequence(model, seq_path, rounds, calls, device: str = "cpu") -> dict[str, float]:
    session = raw_session(seq_path, device)
    x = np.random.default_rng(0).standard_normal((64, 20, INPUT)).astype(np.float32)
    lengths = np.full(64, 20, np.int64)
    lstm = model.body.cells[0].fused  # torch nn.LSTM, batch-first: oneDNN on CPU, cuDNN on CUDA
    xt = torch.from_numpy(x)

    def torch_sequence():
        with torch.inference_mode():  # from host inputs to host outputs, as onnxruntime's run() is timed
            out, _ = lstm(xt.to(device))
            return torch.softmax(model.head(out[:, -1]), dim=-1).cpu()

    return interleaved(
        {"torch": torch_sequence, "seqpipe": lambda: session.run(None, {"x": x, "lengths": lengths})}, rounds, calls
    )


def bench_training(epochs: int) -> dict[str, float]:
    """seqpipe's trainer vs a hand-written loop: same task data, model, optimiser, clipping, epochs."""
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.config import TrainingConfig
    from seqpipe.plugins import make_plugin_manager
    from seqpipe.registry import build_registry
    from seqpipe.training import train

    registry = build_registry(make_plugin_manager(strict=False, warn=lambda line: None)[0])
    resolved = resolve_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "spam.toml", registry)
    task = resolved.make_task()
    task.prepare()
    cfg = TrainingConfig(epochs=epochs, patience=epochs + 1, batch_size=64)
    times = {"seqpipe": [], "hand": []}
    for _ in range(2):  # alternate to even out machine noise
        for who in ("hand", "seqpipe"):
            torch.manual_seed(0)
            model = task.build_model(resolved.make_topology)
            start = time.perf_counter()
            if who == "seqpipe":
                with tempfile.TemporaryDirectory() as tmp:
                    train(task, model, cfg, Path(tmp) / "ckpt.safetensors", log=lambda line: None)
            else:
                hand_loop(task, model, cfg)
            times[who].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def hand_loop(task, model, cfg) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        model.train()
        for batch in task.batches("train", cfg.batch_size, shuffle=True, generator=generator):
            optimizer.zero_grad(set_to_none=True)
            logits, _ = model(batch.tokens, batch.lengths)
            torch.nn.functional.cross_entropy(logits, batch.targets).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():  # validation each epoch, as the trainer does
            for batch in task.batches("validation", 256):
                model(batch.tokens, batch.lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run, not a measurement")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: torch and onnxruntime both on the GPU (fp16 rows instead of int8; no training row)",
    )
    args = parser.parse_args()
    rounds, calls = (3, 20) if args.quick else (9, 200)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("benchmark: --device cuda needs a torch build with CUDA and a GPU; this torch has none.")
    if cuda and choose_providers("cuda")[0] != "CUDAExecutionProvider":
        sys.exit("benchmark: --device cuda needs onnxruntime's CUDA provider (onnxruntime-gpu).")
    torch.manual_seed(0)
    model = seed_classifier().eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        step_path, traced_path, seq_path = tmp / "step.onnx", tmp / "step.traced.onnx", tmp / "sequence.onnx"
        # exported on CPU, as always: the native step graph a run writes, and the traced one it replaced
        export_step(model, torch.randn(2, INPUT), step_path, opset=18, exporter="dynamo")
        export_step(model, torch.randn(2, INPUT), traced_path, opset=18, exporter="dynamo", native=False)
        onnx.save(sequence_graph(model, 18, CLASSES, "bench_sequence"), str(seq_path))
        for path, graph in ((step_path, "step"), (traced_path, "step"), (seq_path, "sequence")):
            write_metadata(path, spec(graph))
        reduced = "fp16" if cuda else "int8"
        reduced_path = tmp / f"step.{reduced}.onnx"
        (convert_fp16 if cuda else quantize_int8)(step_path, reduced_path)  # what `[export] fp16 / int8 = true` writes
        model.to(args.device)
        step1 = bench_steps(model, step_path, reduced_path, 1, rounds, calls, args.device)
        step64 = bench_steps(model, step_path, reduced_path, 64, rounds, max(20, calls // 4), args.device)
        sequence = bench_sequence(model, seq_path, rounds, max(10, calls // 20), args.device)
        graphs = {
            b: bench_step_graphs(
                step_path, traced_path, b, rounds, calls if b == 1 else max(20, calls // 4), args.device
            )
            for b in (1, 64)
        }
    training = None if args.skip_training or cuda else bench_training(1 if args.quick else 3)
    rows = [
        (
            "step latency, batch 1: torch eager / seqpipe stream",
            step1["torch"] / step1["seqpipe"],
            ">= 3.0",
            f"{step1['torch'] * 1e6:.0f} µs / {step1['seqpipe'] * 1e6:.0f} µs",
        ),
        (
            "step latency, batch 64: torch eager / seqpipe stream",
            step64["torch"] / step64["seqpipe"],
            ">= 1.2",
            f"{step64['torch'] * 1e3:.2f} ms / {step64['seqpipe'] * 1e3:.2f} ms",
        ),
        (
            "seqpipe overhead over raw onnxruntime, batch 1",
            step1["seqpipe_vs_raw"] / step1["raw_ort"],
            "<= 1.10",
            f"{step1['seqpipe_vs_raw'] * 1e6:.0f} µs / {step1['raw_ort'] * 1e6:.0f} µs",
        ),
        (
            "seqpipe overhead over raw onnxruntime, batch 64",
            step64["seqpipe_vs_raw"] / step64["raw_ort"],
            "<= 1.10",
            f"{step64['seqpipe_vs_raw'] * 1e3:.2f} ms / {step64['raw_ort'] * 1e3:.2f} ms",
        ),
        (
            "sequence 64x20: torch nn.LSTM / seqpipe sequence graph",
            sequence["torch"] / sequence["seqpipe"],
            ">= 0.95",
            f"{sequence['torch'] * 1e3:.1f} ms / {sequence['seqpipe'] * 1e3:.1f} ms",
        ),
        (
            f"{reduced} vs fp32 step, batch 64: fp32 / {reduced}",
            step64["fp32"] / step64["reduced"],
            ">= 1.5" if not cuda else "(info)",
            f"{step64['fp32'] * 1e3:.2f} ms / {step64['reduced'] * 1e3:.2f} ms",
        ),
        (
            f"{reduced} vs fp32 step, batch 1: fp32 / {reduced}",
            step1["fp32"] / step1["reduced"],
            "(info)",
            f"{step1['fp32'] * 1e6:.0f} µs / {step1['reduced'] * 1e6:.0f} µs",
        ),
    ]
    for b, pair in graphs.items():
        unit, scale = ("µs", 1e6) if b == 1 else ("ms", 1e3)
        rows.append(
            (
                f"step graph, batch {b}: traced (torch.onnx) / native operators (raw onnxruntime)",
                pair["traced"] / pair["native"],
                "(info)",
                f"{pair['traced'] * scale:.{0 if b == 1 else 2}f} {unit} / "
                f"{pair['native'] * scale:.{0 if b == 1 else 2}f} {unit}",
            )
        )
    if training:
        rows.append(
            (
                "training overhead: seqpipe trainer / hand-written loop",
                training["seqpipe"] / training["hand"],
                "<= 1.10",
                f"{training['seqpipe']:.1f} s / {training['hand']:.1f} s",
            )
        )
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}"
    )
    if cuda:
        machine += f", {torch.cuda.get_device_name()} (torch and onnxruntime on CUDA)"
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [{"measure": r[0], "ratio": round(r[1], 3), "target": r[2], "raw": r[3]} for r in rows],
                },
                indent=2,
            )
        )
        return
    print(f"machine: {machine}")
    print("| measure | ratio | target | raw timings |\n| --- | --- | --- | --- |")
    for name, ratio, target, raw in rows:
        print(f"| {name} | {ratio:.2f} | {target} | {raw} |")


if __name__ == "__main__":
    sys.exit(main())
