"""Inputs for ``seqpipe predict --file``: read one at a time from a CSV, TSV, JSON Lines or plain
text file, so that any number of them passes through bounded memory.

The format comes from the extension (``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson``; anything else is
one input per line). Tables and JSON Lines give the named column (by default the one the model was
trained on, from its ``seqpipe.spec``). Nothing is dropped or altered without a word: bytes that are
not UTF-8, a missing column, a row without the column, a JSON line that is not an object are
refused naming the line; blank lines of a text file are skipped and counted (:attr:`InputFile.blank`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from seqpipe.errors import SeqpipeError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class FileInput:
    line: int  # the line of the file the input starts on (1 = the first line)
    value: str  # the input as `seqpipe predict` takes it on its command line (number vectors as JSON)


class InputFile:
    """The inputs of ``path``, read lazily: iterate it once."""

    def __init__(self, path: Path, column: str | None, model_column: str | None) -> None:
        self.path = path
        self.format = FORMATS.get(path.suffix.lower(), "lines")
        self.column = column or model_column  # an explicit --column, else the model's own input column
        self.explicit = column is not None
        self.blank = 0  # blank lines skipped (text files)
        if not path.is_file():
            raise SeqpipeError(f"--file {path}: no such file; give a CSV, TSV, JSON Lines or text file of inputs.")

    def __iter__(self) -> Iterator[FileInput]:
        with self.path.open("rb") as raw:
            lines = self._decoded(raw)
            if self.format == "lines":
                yield from self._text_lines(lines)
            elif self.format == "jsonl":
                yield from self._json_lines(lines)
            else:
                yield from self._table(lines)

    def _decoded(self, raw: IO[bytes]) -> Iterator[str]:
        """The file's lines as text, strictly UTF-8 (a byte-order mark at the start is dropped)."""
        for number, data in enumerate(raw, start=1):
            if number == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SeqpipeError(
                    f"{self.path}:{number}: byte {exc.start + 1} of the line is not UTF-8 text; save the file as UTF-8."
                ) from None

    def _text_lines(self, lines: Iterator[str]) -> Iterator[FileInput]:
        if self.explicit:
            raise SeqpipeError(
                f"--column {self.column}: {self.path} is read one input per line (it is not .csv, .tsv or "
                ".jsonl); leave --column out, or give a table."
            )
        for number, text in enumerate(lines, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                self.blank += 1
                continue
            yield FileInput(number, text)

    def _json_lines(self, lines: Iterator[str]) -> Iterator[FileInput]:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                self.blank += 1
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SeqpipeError(
                    f"{self.path}:{number}: not a JSON object ({exc.msg} at column {exc.colno}); give one "
                    "object per line."
                ) from None
            if not isinstance(record, dict):
                raise SeqpipeError(
                    f"{self.path}:{number}: a JSON {type(record).__name__}, not an object; give one object "
                    'per line, e.g. {"' + (self.column or "text") + '": "..."}.'
                )
            yield FileInput(number, self._value(record, list(record), number))

    def _table(self, lines: Iterator[str]) -> Iterator[FileInput]:
        # strict: a quote never closed is an error at the end of the file, not a last field that
        # silently swallows every line after it; fields as long as a text may be
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
        reader = csv.reader(lines, delimiter="\t" if self.format == "tsv" else ",", strict=True)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                return
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise SeqpipeError(
                    f"{self.path}:1: column name {repeated[0]!r} appears twice in the header; rename one."
                )
            if self.column not in header:  # a file without a header would lose its first input as one: refuse
                which = "--column" if self.explicit else "the model's input column"
                found = ", ".join(repr(name) for name in header)
                raise SeqpipeError(
                    f"{self.path}:1: the header ({found}) has no column '{self.column}' ({which}); add a "
                    "header line naming the column, or choose one with --column."
                )
            line = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):  # a comma too many or too few: the columns no longer line up
                    raise SeqpipeError(
                        f"{self.path}:{line}: {len(row)} fields and the header has {len(header)}; quote "
                        "values that hold the delimiter, or fix the row."
                    )
                if row:  # csv gives [] for an empty line
                    yield FileInput(line, self._value(dict(zip(header, row)), header, line))
                else:
                    self.blank += 1
                line = reader.line_num + 1
        except csv.Error as exc:
            said = "a quote opened here is never closed" if "end of data" in str(exc) else str(exc)
            raise SeqpipeError(f"{self.path}:{line}: {said}; fix the {self.format.upper()} quoting.") from None

    def _value(self, record: dict, found: list[str], line: int) -> str:
        if self.column is None:
            raise SeqpipeError(
                f"{self.path}: the model does not name its input column; choose one with --column "
                f"(found: {', '.join(found)})."
            )
        if self.column not in record:
            which = "--column" if self.explicit else "the model's input column"
            raise SeqpipeError(
                f"{self.path}:{line}: no column '{self.column}' ({which}; found: {', '.join(found) or 'none'}); "
                "choose one with --column."
            )
        value = record[self.column]
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            # a token list, as the command line takes it: tokens separated by spaces (with --tokens, a
            # tagger splits them there again), so a token holding a space would become two
            if any(not v or any(c.isspace() for c in v) for v in value):
                raise SeqpipeError(
                    f"{self.path}:{line}: column '{self.column}' lists an empty token or one holding a space; "
                    "give the text as a string instead."
                )
            return " ".join(value)
        if isinstance(value, list) and value:  # number vectors, as JSON text (what the command line takes)
            return json.dumps(value)
        raise SeqpipeError(
            f"{self.path}:{line}: column '{self.column}' holds {json.dumps(value)[:40]}, not text, tokens or number "
            "vectors; give text (or a list of tokens or of number vectors)."
        )


def chunks(inputs: Iterator[FileInput], size: int) -> Iterator[list[FileInput]]:
    """Consecutive lists of at most ``size`` inputs."""
    chunk: list[FileInput] = []
    for item in inputs:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
