"""Rebuild seqpipe/datasets/japanese_vowels/{train,test}.jsonl from the PyPI package sktime.

    pip download --no-deps sktime==1.2.0 && unzip sktime-1.2.0-py3-none-any.whl 'sktime/datasets/data/JapaneseVowels/*'
    python tools/build_japanese_vowels_dataset.py sktime/datasets/data/JapaneseVowels

sktime's ``JapaneseVowels_TRAIN.ts`` / ``JapaneseVowels_TEST.ts`` (the UCI split, 270 / 370
utterances) hold one utterance per line after ``@data``: 12 comma-separated series (one per LPC
cepstrum coefficient, all of the utterance's length), separated by ``:``, then the speaker label.
Each utterance is transposed to frames: ``{"coefficients": [[12 floats], ...], "speaker": "1"}``,
one JSON object per line, in the file's order. Every value is parsed with ``float`` and checked to
print back as the same decimal number (322 values written like ``-8.3E-4`` come out as
``-0.00083``; the number is unchanged); nothing is dropped or resampled. The script fails if a count,
dimension or length differs from the published description.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "japanese_vowels"
SPLITS = {"train": ("JapaneseVowels_TRAIN.ts", 270), "test": ("JapaneseVowels_TEST.ts", 370)}
DIMENSIONS = 12
SPEAKERS = [str(i) for i in range(1, 10)]


def read_ts(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    records = []
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        *series, speaker = line.strip().split(":")
        if len(series) != DIMENSIONS or speaker not in SPEAKERS:
            raise ValueError(f"{path}:{number}: {len(series)} dimensions, label {speaker!r}")
        columns = []
        for text in series:
            values = []
            for field in text.split(","):
                value = float(field)
                if not math.isfinite(value) or Decimal(repr(value)) != Decimal(field):
                    raise ValueError(f"{path}:{number}: value {field!r} does not round-trip")
                values.append(value)
            columns.append(values)
        lengths = {len(c) for c in columns}
        if len(lengths) != 1 or not 7 <= lengths.pop() <= 29:
            raise ValueError(f"{path}:{number}: ragged or out-of-range lengths")
        records.append({"coefficients": [list(frame) for frame in zip(*columns)], "speaker": speaker})
    return records


def main(source: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, (name, expected) in SPLITS.items():
        records = read_ts(source / name)
        if len(records) != expected:
            raise ValueError(f"{name}: {len(records)} utterances, expected {expected}")
        with (OUT / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
            for record in records:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        lengths = [len(r["coefficients"]) for r in records]
        speakers = Counter(r["speaker"] for r in records)
        print(
            f"{split}: {len(records)} utterances, {min(lengths)}-{max(lengths)} frames, "
            f"{sum(lengths)} frames in all; speakers {dict(sorted(speakers.items()))}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "sktime/datasets/data/JapaneseVowels"))
