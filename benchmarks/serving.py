"""seqpipe serving and training benchmark: every figure is a ratio measured in one process.

    python benchmarks/serving.py            # table
    python benchmarks/serving.py --json     # one JSON object
    python benchmarks/serving.py --quick    # fewer repetitions (smoke run)

Model: the seed's example sizes, an LSTM with input 300 and hidden 512, and a 10-way softmax head.
Rows (ratio > 1 means seqpipe is faster):
  step latency, batch 1 and 64   torch eager ``model.step`` / seqpipe ``Stream.step`` (IO binding)
  overhead over raw onnxruntime  seqpipe Stream / a minimal hand-written IO-binding loop, same graph
  sequence, batch 64 × 20        torch ``nn.LSTM`` (oneDNN) + head / seqpipe sequence graph (native LSTM op)
  int8 vs fp32 step, batch 64    fp32 step graph / int8 dynamically quantized step graph (raw onnxruntime)
  training overhead              seqpipe trainer / hand-written torch loop (same model, data, epochs)

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
from onnx import TensorProto, helper

from seqpipe.builtin.cells import LSTMCell
from seqpipe.builtin.native_onnx import IR_VERSION, GraphBuilder, emit_topology
from seqpipe.builtin.topologies import Stacked
from seqpipe.contracts import StepModel
from seqpipe.export import export_step, write_metadata
from seqpipe.initial_state import InitialState
from seqpipe.quantize import quantize_int8
from seqpipe.runtime import StepRunner, Stream

INPUT, HIDDEN, CLASSES = 300, 512, 10


class SeedClassifier(StepModel):
    """The seed's ``VanillaRNN`` shape with an LSTM: numeric inputs, softmax head, every step."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Stacked(LSTMCell, INPUT, HIDDEN, {}, num_layers=1)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)
        self.initial = InitialState("zeros", self.body.state_names, 1, HIDDEN)
        self.state_names, self.num_slots, self.hidden_size = self.body.state_names, 1, HIDDEN

    def initial_state(self, batch: int):
        return self.initial(batch)

    def step(self, x, state):
        h, state = self.body.step(x, state)
        return torch.softmax(self.head(h), dim=-1), state


def spec(graph: str) -> dict:
    state_shape = ["batch", 1, HIDDEN]
    x_shape = ["batch", INPUT] if graph == "step" else ["batch", "time", INPUT]
    return {"format_version": 1, "graph": graph, "task": "benchmark", "cell": "lstm", "topology": "single",
            "inputs": [{"name": "x", "dtype": "float32", "shape": x_shape}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", CLASSES]}],
            "states": [{"name": n, "shape": state_shape} for n in ("h", "c")],
            "initial_state": {"rule": "zeros"}, "encoding": {"output": {"labels": [str(i) for i in range(CLASSES)]}}}


def sequence_graph(model: SeedClassifier, path: Path) -> None:
    g = GraphBuilder()
    lengths = g.op("Cast", ["lengths"], "lengths32", to=TensorProto.INT32)[0]
    time_major = g.op("Transpose", ["x"], "time_major", perm=[1, 0, 2])[0]
    summary, states, _ = emit_topology(g, model.body, time_major, lengths)
    logits = g.op("Gemm", [summary, g.const("w", model.head.weight.detach().numpy()), g.const("b", model.head.bias.detach().numpy())],
                  "head", transB=1)[0]
    g.nodes.append(helper.make_node("Softmax", [logits], ["y"], axis=-1))
    for n, s in zip(("h", "c"), states):
        g.nodes.append(helper.make_node("Identity", [s], [f"state_out.{n}"]))
    graph = helper.make_graph(g.nodes, "bench_sequence",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", INPUT]),
                               helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])]
                              + [helper.make_tensor_value_info(f"state_out.{n}", TensorProto.FLOAT, ["batch", 1, HIDDEN]) for n in ("h", "c")],
                              initializer=g.initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION), str(path))


def interleaved(contenders: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per call for each contender, measured in alternating rounds."""
    samples = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(max(3, calls // 10)):
            fn()  # warm-up
    names = list(contenders)
    for round_ in range(rounds):
        # alternate the order each round: whoever runs first after another pays for its cache misses
        for name in (names if round_ % 2 == 0 else names[::-1]):
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(v) for name, v in samples.items()}


def raw_iobinding_loop(session: ort.InferenceSession, batch: int):
    """The minimal hand-written way to step a graph with onnxruntime: the reference for overhead."""
    bufs = [{n: ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, 1, HIDDEN), np.float32)) for n in ("h", "c")} for _ in range(2)]
    x = ort.OrtValue.ortvalue_from_numpy(np.random.default_rng(0).standard_normal((batch, INPUT)).astype(np.float32))
    y = ort.OrtValue.ortvalue_from_shape_and_type((batch, CLASSES), np.float32, "cpu", 0)
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


def bench_steps(model, step_path, int8_path, batch, rounds, calls) -> dict[str, float]:
    runner = StepRunner(step_path, device="cpu")
    stream = Stream(runner, batch)
    x_np = np.random.default_rng(0).standard_normal((batch, INPUT)).astype(np.float32)
    x_t = torch.from_numpy(x_np)
    state = [model.initial_state(batch)]

    def torch_step():
        with torch.inference_mode():
            y, state[0] = model.step(x_t, state[0])
        return y

    seqpipe, raw = (lambda: stream.step(x_np)), raw_iobinding_loop(runner.session, batch)
    int8 = raw_iobinding_loop(ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]), batch)
    # each comparison is its own interleaved pair, so a third contender cannot skew it
    vs_torch = interleaved({"torch": torch_step, "seqpipe": seqpipe}, rounds, calls)
    vs_raw = interleaved({"seqpipe": seqpipe, "raw_ort": raw}, rounds, calls)
    vs_int8 = interleaved({"raw_ort": raw, "raw_ort_int8": int8}, rounds, calls)
    return {"torch": vs_torch["torch"], "seqpipe": vs_torch["seqpipe"], "seqpipe_vs_raw": vs_raw["seqpipe"],
            "raw_ort": vs_raw["raw_ort"], "fp32": vs_int8["raw_ort"], "int8": vs_int8["raw_ort_int8"]}


def bench_sequence(model, seq_path, rounds, calls) -> dict[str, float]:
    session = ort.InferenceSession(str(seq_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((64, 20, INPUT)).astype(np.float32)
    lengths = np.full(64, 20, np.int64)
    lstm = model.body.cells[0].fused  # torch nn.LSTM, batch-first, oneDNN on CPU
    xt = torch.from_numpy(x)

    def torch_sequence():
        with torch.inference_mode():
            out, _ = lstm(xt)
            return torch.softmax(model.head(out[:, -1]), dim=-1)

    return interleaved({"torch": torch_sequence, "seqpipe": lambda: session.run(None, {"x": x, "lengths": lengths})}, rounds, calls)


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
    args = parser.parse_args()
    rounds, calls = (3, 20) if args.quick else (9, 200)
    torch.manual_seed(0)
    model = SeedClassifier().eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        step_path, seq_path, int8_path = tmp / "step.onnx", tmp / "sequence.onnx", tmp / "step.int8.onnx"
        export_step(model, torch.randn(2, INPUT), step_path, opset=18, exporter="dynamo")
        write_metadata(step_path, spec("step"))
        sequence_graph(model, seq_path)
        quantize_int8(step_path, int8_path)  # what `[export] int8 = true` writes
        step1 = bench_steps(model, step_path, int8_path, 1, rounds, calls)
        step64 = bench_steps(model, step_path, int8_path, 64, rounds, max(20, calls // 4))
        sequence = bench_sequence(model, seq_path, rounds, max(10, calls // 20))
    training = None if args.skip_training else bench_training(1 if args.quick else 3)
    rows = [
        ("step latency, batch 1: torch eager / seqpipe stream", step1["torch"] / step1["seqpipe"], ">= 3.0",
         f"{step1['torch'] * 1e6:.0f} µs / {step1['seqpipe'] * 1e6:.0f} µs"),
        ("step latency, batch 64: torch eager / seqpipe stream", step64["torch"] / step64["seqpipe"], ">= 1.2",
         f"{step64['torch'] * 1e3:.2f} ms / {step64['seqpipe'] * 1e3:.2f} ms"),
        ("seqpipe overhead over raw onnxruntime, batch 1", step1["seqpipe_vs_raw"] / step1["raw_ort"], "<= 1.10",
         f"{step1['seqpipe_vs_raw'] * 1e6:.0f} µs / {step1['raw_ort'] * 1e6:.0f} µs"),
        ("seqpipe overhead over raw onnxruntime, batch 64", step64["seqpipe_vs_raw"] / step64["raw_ort"], "<= 1.10",
         f"{step64['seqpipe_vs_raw'] * 1e3:.2f} ms / {step64['raw_ort'] * 1e3:.2f} ms"),
        ("sequence 64x20: torch nn.LSTM / seqpipe sequence graph", sequence["torch"] / sequence["seqpipe"], ">= 0.95",
         f"{sequence['torch'] * 1e3:.1f} ms / {sequence['seqpipe'] * 1e3:.1f} ms"),
        ("int8 vs fp32 step, batch 64: fp32 / int8", step64["fp32"] / step64["int8"], ">= 1.5",
         f"{step64['fp32'] * 1e3:.2f} ms / {step64['int8'] * 1e3:.2f} ms"),
        ("int8 vs fp32 step, batch 1: fp32 / int8", step1["fp32"] / step1["int8"], "(info)",
         f"{step1['fp32'] * 1e6:.0f} µs / {step1['int8'] * 1e6:.0f} µs"),
    ]
    if training:
        rows.append(("training overhead: seqpipe trainer / hand-written loop", training["seqpipe"] / training["hand"], "<= 1.10",
                     f"{training['seqpipe']:.1f} s / {training['hand']:.1f} s"))
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, onnxruntime {ort.__version__}, torch {torch.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "rows": [{"measure": r[0], "ratio": round(r[1], 3), "target": r[2], "raw": r[3]} for r in rows]}, indent=2))
        return
    print(f"machine: {machine}")
    print("| measure | ratio | target | raw timings |\n| --- | --- | --- | --- |")
    for name, ratio, target, raw in rows:
        print(f"| {name} | {ratio:.2f} | {target} | {raw} |")


if __name__ == "__main__":
    sys.exit(main())
