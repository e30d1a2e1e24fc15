"""Rebuild seqpipe/datasets/thai_english_transliteration/th-en-transliteration.tsv from PyPI pythainlp.

    pip download --no-deps pythainlp==5.4.0
    unzip pythainlp-5.4.0-py3-none-any.whl 'pythainlp/corpus/th_en_transliteration_v1.4.tsv'
    python tools/build_thai_english_transliteration_dataset.py pythainlp/corpus/th_en_transliteration_v1.4.tsv

The source (the Thai-English transliteration dictionary v1.4 by Wannaphong Phatthiyaphaibun) has
a header ``th  en  check`` and one pair per line: a word written in Thai script (mostly an
English loanword, e.g. ``กาแล็กซี``) and the English word it transliterates (``galaxy``); the
``check`` column (whether the spelling follows the Royal Society of Thailand) is not kept.
Leading/trailing whitespace is stripped from both fields; pairs with an empty field and exact
duplicate pairs (after stripping) are dropped; all other pairs are kept in the file's order.
If more than ``SIZE`` pairs remain, a seeded random sample of ``SIZE`` is kept (v1.4 has 3,868,
so none is sampled away). Output: TSV with the header ``source  target``.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

SIZE = 8_000
SEED = 2022  # the dictionary's v1.4 year
OUT = (
    Path(__file__).resolve().parents[1]
    / "seqpipe"
    / "datasets"
    / "thai_english_transliteration"
    / "th-en-transliteration.tsv"
)


def main(source: Path) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()
    if lines[0].split("\t")[:2] != ["th", "en"]:
        raise ValueError(f"{source}: unexpected header {lines[0]!r}")
    pairs, seen = [], set()
    stripped = empty = duplicates = 0
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{source}:{number}: fewer than two fields")
        th, en = fields[0].strip(), fields[1].strip()
        stripped += (th != fields[0]) + (en != fields[1])
        if not th or not en:
            empty += 1
            continue
        if (th, en) in seen:
            duplicates += 1
            continue
        seen.add((th, en))
        pairs.append((th, en))
    if len(pairs) > SIZE:
        keep = sorted(random.Random(SEED).sample(range(len(pairs)), SIZE))
        pairs = [pairs[i] for i in keep]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "target"])
        writer.writerows(pairs)
    print(
        f"{OUT}: {len(pairs)} pairs kept; dropped {empty} with an empty field and {duplicates} exact "
        f"duplicates; stripped whitespace from {stripped} fields"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "pythainlp/corpus/th_en_transliteration_v1.4.tsv"))
