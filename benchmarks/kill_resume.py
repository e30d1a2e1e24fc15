"""Kill a run at random moments and resume it: it must always end ``done`` with the weights, bit for
bit, of a run never stopped (CPU).

    python benchmarks/kill_resume.py                    # 20 trials, a Markdown table
    python benchmarks/kill_resume.py --trials 5 --seed 1

Each trial starts ``seqpipe run`` on a small bundled-data pipeline in a fresh process, kills it with
SIGKILL after a delay drawn uniformly over the uninterrupted run's own time from the moment its run
directory appears to its exit, timed from the moment the trial's own run directory appears (so kills
land in training, checkpoint writes, evaluation, export and the parity checks alike; a fifth of them
earlier, in start-up), then
continues it the way the run's own messages say: ``seqpipe run --resume RUN`` when an epoch had
finished, the same command with ``--out RUN --force`` when none had, nothing when it was done.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv"


def write_pipeline(folder: Path) -> Path:
    """A small pipeline whose every piece of state matters on resume: dropout and token dropout (the
    random state), EMA (the averaged weights), lr_decay (the learning rates), early stopping (patience)."""
    rows = DATA.read_text(encoding="utf-8").splitlines()
    (folder / "data.csv").write_text("\n".join(rows[:301]) + "\n", encoding="utf-8")
    path = folder / "p.toml"
    path.write_text(
        '[data]\npath = "data.csv"\n[model]\nhidden_size = 16\n[input]\nmax_length = 40\n[task.options]\n'
        "embedding_size = 8\ndropout = 0.2\ntoken_dropout = 0.1\n[training]\nbatch_size = 32\nepochs = 12\n"
        "patience = 100\nlr_decay = 0.7\nema_decay = 0.9\nthreads = 1\n[export]\nparity_sequences = 40\n",
        encoding="utf-8",
    )
    return path


def seqpipe(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqpipe", *args], capture_output=True, text=True, timeout=timeout)


def stage(run: Path) -> str:
    """Where the run was when it was killed, from what it left on disk."""
    state = json.loads((run / "status.json").read_text())["state"] if (run / "status.json").is_file() else None
    if state is None:
        return "start-up"
    if state == "done":
        return "finishing (done)"
    onnx = sorted(p.name for p in (run / "onnx").glob("*.onnx")) if (run / "onnx").is_dir() else []
    if onnx:
        return f"export and parity ({', '.join(onnx)} written)"
    if (run / "metrics.json").is_file():
        return "evaluation, before export"
    if (run / "trainer_state.json").is_file():
        epoch = json.loads((run / "trainer_state.json").read_text())["epoch"]
        epochs = json.loads((run / "config.json").read_text())["training"]["epochs"]
        return "evaluation (every epoch trained)" if epoch == epochs else f"training (after epoch {epoch})"
    return "training (first epoch)"


def trial(pipeline: Path, run: Path, delay: float, in_startup: bool) -> dict:
    """One kill and the resumes that follow. The kill comes ``delay`` seconds after the process
    starts (``in_startup``) or after its run directory appears: timed from there, the moment lands
    in the same part of the run however slowly this machine happens to start Python and torch."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not in_startup and proc.poll() is None and not (run / "status.json").is_file():
        time.sleep(0.005)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    where = stage(run) if proc.returncode == -signal.SIGKILL else "not killed (finished first)"
    delay_said = f"{delay:.1f} s after {'the process started' if in_startup else 'its run directory appeared'}"
    steps = []
    for _ in range(3):  # the way on, as the run's own messages say it
        state = json.loads((run / "status.json").read_text())["state"] if (run / "status.json").is_file() else None
        if state == "done":
            break
        if (run / "resume.safetensors").is_file():
            result, step = seqpipe("run", "--resume", str(run)), "--resume"
        else:
            result, step = seqpipe("run", str(pipeline), "--out", str(run), "--force"), "run again --force"
        steps.append(f"{step} (exit {result.returncode})")
        if result.returncode != 0:
            return {
                "delay": delay_said,
                "stage": where,
                "steps": steps,
                "error": result.stderr.strip().splitlines()[-1:],
            }
    return {"delay": delay_said, "stage": where, "steps": steps}


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def run_trials(trials: int, seed: int, folder: Path) -> tuple[float, list[dict]]:
    pipeline = write_pipeline(folder)
    started = time.perf_counter()
    whole = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(folder / "whole")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while whole.poll() is None and not (folder / "whole" / "status.json").is_file():
        time.sleep(0.01)
    opened = time.perf_counter() - started  # start-up: imports, reading the data, building the model
    _, stderr = whole.communicate()
    duration = time.perf_counter() - started
    if whole.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: {stderr.strip().splitlines()[-1:]}")
    rng = random.Random(seed)
    results = []
    for number in range(1, trials + 1):
        run = folder / f"trial-{number}"
        in_startup = rng.random() < 0.2
        result = trial(
            pipeline, run, rng.uniform(0.0, opened) if in_startup else rng.uniform(0.0, duration - opened), in_startup
        )
        state = json.loads((run / "status.json").read_text())["state"] if (run / "status.json").is_file() else None
        result["state"] = state
        result["identical"] = state == "done" and same_weights(
            folder / "whole" / "model.safetensors", run / "model.safetensors"
        )
        results.append(result)
        print(
            f"trial {number}: killed {result['delay']}, in {result['stage']}; "
            f"{', '.join(result['steps']) or 'nothing to do'};"
            f" {state}, weights {'identical' if result['identical'] else 'DIFFERENT'}",
            file=sys.stderr,
        )
        shutil.rmtree(run)
    return opened, duration, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        opened, duration, results = run_trials(args.trials, args.seed, Path(folder))
    print(
        f"uninterrupted run: {duration:.1f} s from process start to exit, its run directory made after {opened:.1f} s; "
        f"{sum(r['stage'] != 'not killed (finished first)' for r in results)} of {len(results)} trials killed\n"
    )
    print("| trial | killed | where | then | ends | weights |\n| --- | --- | --- | --- | --- | --- |")
    for number, r in enumerate(results, start=1):
        print(
            f"| {number} | {r['delay']} | {r['stage']} | {', '.join(r['steps']) or 'nothing'} | {r['state']} | "
            f"{'identical' if r['identical'] else 'DIFFERENT'} |"
        )
    good = sum(r["identical"] for r in results)
    print(f"\n{good} of {len(results)} trials ended done with the uninterrupted run's weights.")
    raise SystemExit(0 if good == len(results) else 1)


if __name__ == "__main__":
    main()
