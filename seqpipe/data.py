"""Reading users' tabular data (CSV, TSV, JSONL) and splitting it reproducibly."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from seqpipe.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".conll": "conll"}

T = TypeVar("T")


def infer_format(path: Path, declared: str | None, where: str) -> str:
    if declared:
        return declared
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(f"{where}: cannot tell the format of '{path}' from its extension; set data.format to csv, tsv, jsonl or conll.") from None


def read_records(path: Path, fmt: str, columns: Sequence[str], where: str) -> list[dict[str, Any]]:
    """Rows as dicts holding at least ``columns``; a missing file or column is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{where}: data file '{path}' does not exist; fix data.path (relative paths start at the pipeline file).")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if fmt == "jsonl":
                rows = []
                for number, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one JSON object.") from None
                        if not isinstance(row, dict):
                            raise DataError(f"{path}:{number}: expected a JSON object per line, found {type(row).__name__}.")
                        rows.append(row)
                header = sorted({k for row in rows for k in row})
            else:
                reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
                rows = list(reader)
                header = list(reader.fieldnames or [])
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save the data file as UTF-8.") from None
    if not rows:
        raise DataError(f"{path}: holds no records; a {fmt.upper()} file with a header and rows is expected.")
    for column in columns:
        if column not in header:
            raise DataError(f"{path}: no column '{column}' (found: {', '.join(header) or 'none'}); rename the column or set the task option naming it.")
    for number, row in enumerate(rows, start=2 if fmt != "jsonl" else 1):
        for column in columns:
            if row.get(column) in (None, ""):
                raise DataError(f"{path}: record {number - (1 if fmt != 'jsonl' else 0)}: empty '{column}'; fill it in or remove the record.")
    return rows


def split_three(items: Sequence[T], validation_fraction: float, test_fraction: float, seed: int,
                key=None) -> tuple[list[T], list[T], list[T]]:
    """Shuffle with ``seed`` and split into train/validation/test, stratified by ``key`` if given."""
    groups: dict[Any, list[T]] = {}
    for item in items:
        groups.setdefault(key(item) if key else None, []).append(item)
    rng = random.Random(seed)
    train, validation, test = [], [], []
    for group_key in sorted(groups, key=repr):
        group = list(groups[group_key])
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * validation_fraction)
        test += group[:n_test]
        validation += group[n_test:n_test + n_val]
        train += group[n_test + n_val:]
    for part in (train, validation, test):
        rng.shuffle(part)
    return train, validation, test


def read_conll(path: Path, where: str) -> list[list[tuple[str, str]]]:
    """Sentences of (token, tag) from CoNLL-style text: ``token<TAB>tag`` per line (extra columns
    between them are ignored: the first is the token, the last the tag), a blank line between sentences."""
    if not path.is_file():
        raise DataError(f"{where}: data file '{path}' does not exist; fix data.path (relative paths start at the pipeline file).")
    sentences, current = [], []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    if current:
                        sentences.append(current)
                        current = []
                    continue
                if line.startswith("#"):
                    continue  # CoNLL-U style comments
                fields = line.split("\t")
                if len(fields) < 2 or not fields[0] or not fields[-1]:
                    raise DataError(f"{path}:{number}: expected 'token<TAB>tag', found {line[:60]!r}; separate token and tag by a tab.")
                current.append((fields[0], fields[-1]))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save the data file as UTF-8.") from None
    if current:
        sentences.append(current)
    if not sentences:
        raise DataError(f"{path}: holds no sentences; give 'token<TAB>tag' lines with a blank line between sentences.")
    return sentences


def batched(examples: Sequence[T], batch_size: int, collate: Callable[[list[T]], Any], *, shuffle: bool = False,
            generator=None) -> Iterator[Any]:
    """``collate`` applied to consecutive chunks of ``examples``, in an order drawn from torch's
    ``generator`` when ``shuffle`` (so a seeded run sees the same batches)."""
    if shuffle:
        import torch  # training-side only; the torch-free runtime never calls this

        order = torch.randperm(len(examples), generator=generator).tolist()
    else:
        order = list(range(len(examples)))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start:start + batch_size]])
