"""seqpipe training benchmarks: what saving the resumable state after every epoch costs, what
length bucketing saves, and what two DistributedDataParallel processes give over one.

    python benchmarks/training.py            # table
    python benchmarks/training.py --json     # one JSON object
    python benchmarks/training.py --epochs 1 # shorter (smoke run)

Checkpointing: the character-level spam classifier (pipelines/spam.toml: its data, model and
training settings), trained for the same epochs with and without ``resume.safetensors`` written
after each epoch, in alternating rounds in one process (this machine is shared and noisy: each
side keeps its fastest round). Reported: the overhead as a share of epoch time, and one save's
time beside one epoch's.

Bucketing: the same pipeline and epochs with ``[training] bucket`` off and on, alternating rounds
in one process, each side's fastest round: training examples per second of the training steps'
time, the padding share of the inputs, and the test macro-F1 of each.

Processes: the same pipeline for the same epochs, ``seqpipe run`` in one process with 2 torch
threads against ``seqpipe run --nproc 2`` (torchrun, gloo, 1 thread each), alternating, each side's
fastest round; training examples per second of the training steps' time (``train_seconds`` in
history.jsonl; validation, on rank 0 alone, is not counted), and the test macro-F1 of each.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def bench_checkpointing(epochs: int, rounds: int) -> dict[str, float]:
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.plugins import load_registry
    from seqpipe.resume import save_training_state
    from seqpipe.training import train

    registry, _ = load_registry(False, warn=lambda line: None)
    resolved = resolve_pipeline(REPO / "pipelines" / "spam.toml", registry)
    task = resolved.make_task()
    task.prepare()
    cfg = resolved.config.training.model_copy(update={"epochs": epochs, "patience": epochs + 1, "max_minutes": None})
    times: dict[str, list[float]] = {"without": [], "with": []}
    for round_ in range(rounds):
        for side in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
            torch.manual_seed(0)
            model = task.build_model(resolved.make_topology, resolved.config.model.initial_state)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train(
                    task,
                    model,
                    cfg,
                    Path(tmp) / "best.safetensors",
                    log=lambda line: None,
                    run_dir=Path(tmp) if side == "with" else None,
                )
                times[side].append(time.perf_counter() - start)
    optimizer = torch.optim.AdamW(model.parameters())
    model(*_one_batch(task))[0].sum().backward()
    optimizer.step()  # moments exist, as after an epoch
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for _ in range(5):
            save_training_state(Path(tmp), model, None, optimizer, torch.Generator(), {"epoch": 1})
        save = (time.perf_counter() - start) / 5
    without, with_ = min(times["without"]), min(times["with"])
    return {
        "epochs": epochs,
        "epoch_seconds": without / epochs,
        "save_seconds": save,
        "overhead_share": (with_ - without) / without,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def bench_bucketing(epochs: int, rounds: int) -> dict[str, float]:
    """pipelines/spam.toml (subject lines of 1 to 128 characters, as input.max_length keeps them)
    trained with ``[training] bucket`` off and on, alternating rounds in one process: training examples per
    second over the training steps, the padding share of each, and the test macro-F1 of each."""
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.plugins import load_registry
    from seqpipe.training import train

    registry, _ = load_registry(False, warn=lambda line: None)
    resolved = resolve_pipeline(REPO / "pipelines" / "spam.toml", registry)
    task = resolved.make_task()
    task.prepare()
    examples = len(task.examples["train"]) * epochs
    sides: dict[str, list[dict]] = {"off": [], "on": []}
    for round_ in range(rounds):
        for side in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            cfg = resolved.config.training.model_copy(
                update={"epochs": epochs, "patience": epochs + 1, "max_minutes": None, "bucket": side == "on"}
            )
            torch.manual_seed(cfg.seed)
            model = task.build_model(resolved.make_topology, resolved.config.model.initial_state)
            with tempfile.TemporaryDirectory() as tmp:
                history = train(task, model, cfg, Path(tmp) / "best.safetensors", log=lambda line: None)
            sides[side].append(
                {
                    "examples_per_second": examples / sum(r["train_seconds"] for r in history),
                    "padding_share": sum(r["padding_share"] for r in history) / len(history),
                    "macro_f1": task.evaluate(model, "test")["macro_f1"],
                }
            )
    best = {side: max(runs, key=lambda r: r["examples_per_second"]) for side, runs in sides.items()}
    return {
        "epochs": epochs,
        "off_examples_per_second": best["off"]["examples_per_second"],
        "on_examples_per_second": best["on"]["examples_per_second"],
        "speedup": best["on"]["examples_per_second"] / best["off"]["examples_per_second"],
        "off_padding_share": best["off"]["padding_share"],
        "on_padding_share": best["on"]["padding_share"],
        "off_macro_f1": best["off"]["macro_f1"],
        "on_macro_f1": best["on"]["macro_f1"],
    }


def bench_processes(epochs: int, rounds: int, nproc: int = 2) -> dict[str, float]:
    import os
    import subprocess
    import sys

    base = (REPO / "pipelines" / "spam.toml").read_text(encoding="utf-8")
    sides: dict[str, list[dict]] = {"one": [], "ddp": []}
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "spam.toml"
        pipeline.write_text(
            base.replace("epochs = 25", f"epochs = {epochs}").replace("patience = 5", f"patience = {epochs + 1}"),
            encoding="utf-8",
        )
        for round_ in range(rounds):
            for side in ("one", "ddp") if round_ % 2 == 0 else ("ddp", "one"):
                out = Path(tmp) / f"{side}-{round_}"
                command = [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(out)]
                if side == "ddp":
                    command += ["--nproc", str(nproc)]
                env = {**os.environ, "OMP_NUM_THREADS": "1" if side == "ddp" else str(nproc)}
                subprocess.run(command, env=env, check=True, capture_output=True)
                metrics = json.loads((out / "metrics.json").read_text())
                seconds = sum(r["train_seconds"] for r in metrics["training"]["history"])
                sides[side].append(
                    {
                        "examples_per_second": metrics["data"]["examples"]["train"] * epochs / seconds,
                        "macro_f1": metrics["test"]["macro_f1"],
                    }
                )
    best = {side: max(runs, key=lambda r: r["examples_per_second"]) for side, runs in sides.items()}
    return {
        "epochs": epochs,
        "processes": nproc,
        "one_process_examples_per_second": best["one"]["examples_per_second"],
        "ddp_examples_per_second": best["ddp"]["examples_per_second"],
        "speedup": best["ddp"]["examples_per_second"] / best["one"]["examples_per_second"],
        "one_process_macro_f1": best["one"]["macro_f1"],
        "ddp_macro_f1": best["ddp"]["macro_f1"],
    }


def _one_batch(task):
    batch = next(iter(task.batches("train", 64)))
    return batch.tokens, batch.lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "checkpointing": bench_checkpointing(args.epochs, args.rounds),
        "bucketing": bench_bucketing(args.epochs, args.rounds),
        "processes": bench_processes(args.epochs, args.rounds),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c = result["checkpointing"]
    print(f"{result['machine']}; spam.toml, {c['parameters']:,} parameters, {c['epochs']} epochs per round")
    print(
        f"per-epoch resumable state: {c['overhead_share']:+.1%} of training time "
        f"(one save {c['save_seconds'] * 1000:.0f} ms, one epoch {c['epoch_seconds']:.1f} s)"
    )
    b = result["bucketing"]
    print(
        f"length bucketing on / off: {b['speedup']:.2f}x training examples per second "
        f"({b['on_examples_per_second']:.0f} / {b['off_examples_per_second']:.0f}); padding "
        f"{b['on_padding_share']:.0%} / "
        f"{b['off_padding_share']:.0%}; test macro-F1 after {b['epochs']} epochs {b['on_macro_f1']:.4f} / "
        f"{b['off_macro_f1']:.4f}"
    )
    p = result["processes"]
    print(
        f"{p['processes']} DDP processes (1 thread each) / 1 process ({p['processes']} threads): {p['speedup']:.2f}x "
        f"training examples per second ({p['ddp_examples_per_second']:.0f} / "
        f"{p['one_process_examples_per_second']:.0f}); "
        f"test macro-F1 after {p['epochs']} epochs {p['ddp_macro_f1']:.4f} / {p['one_process_macro_f1']:.4f}"
    )


if __name__ == "__main__":
    main()
