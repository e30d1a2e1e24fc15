"""Peak memory of ``seqpipe predict RUN --file`` as the number of inputs grows: it must stay flat.

    python benchmarks/predict_file.py                  # trains a small classifier on the bundled
                                                       # spam subjects, then 1,000 / 10,000 / 100,000 inputs
    python benchmarks/predict_file.py --run RUN_DIR    # an existing classify run instead
    python benchmarks/predict_file.py --json

Each row runs the command in a fresh process under ``/usr/bin/time -v`` (its "Maximum resident set
size"), with the results written to a file as JSON Lines, and checks that every input got a result.
The ratio column is each row's peak over the 1,000-input row's: flat memory is a ratio near 1.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTS = (1_000, 10_000, 100_000)


def train(folder: Path) -> Path:
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(
        '[data]\ndataset = "spam-assassin"\n\n[model]\nhidden_size = 32\n\n[input]\nkind = "characters"\n'
        'column = "text"\n\n[task]\nname = "classify"\n\n[training]\nepochs = 2\nthreads = 1\n',
        encoding="utf-8",
    )
    subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(folder / "run")],
        check=True,
        capture_output=True,
    )
    return folder / "run"


def inputs_file(folder: Path, count: int) -> Path:
    """``count`` subject lines (the bundled ones, over and over), one per line."""
    with (REPO / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv").open(encoding="utf-8", newline="") as fh:
        subjects = [row["text"].replace("\n", " ").strip() or "(empty)" for row in csv.DictReader(fh)]
    path = folder / f"inputs-{count}.txt"
    path.write_text("".join(s + "\n" for s in itertools.islice(itertools.cycle(subjects), count)), encoding="utf-8")
    return path


def measure(run: Path, inputs: Path, count: int) -> dict:
    out = inputs.with_suffix(".jsonl")
    started = time.perf_counter()
    with out.open("w", encoding="utf-8") as fh:
        done = subprocess.run(
            [
                "/usr/bin/time",
                "-v",
                sys.executable,
                "-m",
                "seqpipe",
                "predict",
                str(run),
                "--json",
                "--file",
                str(inputs),
            ],
            stdout=fh,
            stderr=subprocess.PIPE,
            text=True,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seqpipe predict failed: {done.stderr.strip().splitlines()[-1]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    with out.open(encoding="utf-8") as fh:
        results = sum(1 for _ in fh)
    if results != count:
        raise SystemExit(f"{count} inputs gave {results} results")
    return {
        "inputs": count,
        "peak_mb": round(peak_kb / 1024, 1),
        "seconds": round(seconds, 1),
        "inputs_per_second": round(count / seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a classify run directory (default: train a small one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqpipe-predict-file-") as tmp:
        folder = Path(tmp)
        run = args.run or train(folder)
        rows = [measure(run, inputs_file(folder, n), n) for n in COUNTS]
    for row in rows:
        row["peak_ratio"] = round(row["peak_mb"] / rows[0]["peak_mb"], 2)
    if args.json:
        print(json.dumps({"rows": rows, "machine": platform.machine(), "date": str(datetime.date.today())}, indent=1))
        return 0
    print("| inputs | peak memory | ratio to 1,000 inputs | time | inputs/s |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['inputs']:,} | {r['peak_mb']} MB | {r['peak_ratio']} | {r['seconds']} s | "
            f"{r['inputs_per_second']:,} |"
        )
    print(f"\n{datetime.date.today()}, {platform.machine()}, Python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
