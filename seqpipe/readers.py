"""Reading users' data files into records: decoding (strict UTF-8, byte-order marks), CSV and TSV,
JSON Lines, and CoNLL. Every fault is a :class:`DataError` naming the file and line; what reading
skips is counted in a :class:`DataAccount`. Nothing here splits or prepares data (see :mod:`seqpipe.data`)."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqpipe.account import DataAccount
from seqpipe.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".conll": "conll"}


class Record(dict):
    """One row of a data file, knowing the line it starts on (for errors that name it); in long
    format, one sequence, knowing each step's line too."""

    line: int = 0
    step_lines: list[int] | None = None
    typed: bool = False  # from JSON Lines: a string is text as written, a number is a number


def _record(values: dict, line: int) -> Record:
    record = Record(values)
    record.line = line
    return record


def infer_format(path: Path, declared: str | None, where: str) -> str:
    if declared:
        return declared
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{where}: cannot tell the format of '{path}' from its extension; set data.format to csv, tsv, jsonl or "
            "conll."
        ) from None


def read_records(
    path: Path, fmt: str, columns: Sequence[str], where: str, *, account: DataAccount | None = None
) -> list[Record]:
    """Rows as :class:`Record` dicts holding at least ``columns``; a missing file or column, or an
    empty value, is a :class:`DataError` naming the file and line. A byte-order mark at the start is
    stripped (and counted in ``account``, if given)."""
    text = read_text(path, where, account)
    rows, header = _json_lines(text, path) if fmt == "jsonl" else _table(text, path, fmt)
    if not rows:
        raise DataError(f"{path}: holds no records; a {fmt.upper()} file with a header and rows is expected.")
    for column in columns:
        if column not in header:
            raise DataError(
                f"{path}: no column '{column}' (found: {', '.join(header) or 'none'}{_near_name(column, header)}); "
                "rename the column, or name it in the pipeline file (input.column, or the task option)."
            )
    for row in rows:
        for column in columns:
            if column not in row:  # a JSON Lines record without the key
                raise DataError(f"{path}:{row.line}: no '{column}' in this record; add it or remove the record.")
            if row[column] in (None, ""):
                raise DataError(f"{path}:{row.line}: empty '{column}'; fill it in or remove the record.")
    return rows


BOM = "\ufeff"  # a byte-order mark, as decoded


def read_text(path: Path, where: str, account: DataAccount | None = None) -> str:
    """The whole text of the data file ``path``, strictly UTF-8: a byte that is not is a :class:`DataError`
    naming its line and column. Byte-order marks at the start are stripped (counted in ``account``):
    Windows editors write one, and it would otherwise stick to the first column name or token."""
    if not path.is_file():
        raise DataError(
            f"{where}: data file '{path}' does not exist; fix data.path (relative paths start at the pipeline file)."
        )
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{path}:1: not UTF-8 text but UTF-16 (it starts with the byte-order mark 0x{data[0]:02x} "
            f"0x{data[1]:02x}); "
            "re-save the file as UTF-8."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data, exc.start) from None
    if text.startswith(BOM):
        text = text.lstrip(BOM)
        if account is not None:
            account.add_for("byte_order_marks", 1, "byte-order mark stripped from the start of", path)
    return text


def _not_utf8(path: Path, data: bytes, at: int) -> DataError:
    """The error for the first byte ``at`` that is not UTF-8: its line and column (characters, as an
    editor counts them: the bytes before it on its line are valid) and its offset in the file."""
    start = data.rfind(b"\n", 0, at) + 1
    before = data[start:at].decode("utf-8")
    column = len(before.lstrip(BOM) if start == 0 else before) + 1
    line = data.count(b"\n", 0, at) + 1
    return DataError(
        f"{path}:{line}: not UTF-8 text (byte 0x{data[at]:02x} at column {column} of the line, "
        f"offset {at} in the file); re-save the file as UTF-8."
    )


def _json_lines(text: str, path: Path) -> tuple[list[Record], list[str]]:
    rows = []
    for number, line in enumerate(
        io.StringIO(text, newline=""), start=1
    ):  # the line breaks a file opened with newline="" has
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one JSON object."
            ) from None
        except _RepeatedKey as exc:
            raise DataError(
                f"{path}:{number}: key {exc.args[0]!r} appears twice in this object (JSON would keep only the "
                "last); remove one."
            ) from None
        if not isinstance(value, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line, found {type(value).__name__}.")
        rows.append(_record(value, number))
        rows[-1].typed = True
    return rows, sorted({k for row in rows for k in row})


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) < len(pairs):
        raise _RepeatedKey(next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i])))
    return value


def _table(text: str, path: Path, fmt: str) -> tuple[list[Record], list[str]]:
    """The rows of a CSV or TSV file (the first line its header) as records. A row with more fields than
    the header, a repeated column name or a quote never closed is refused; a row with fewer fields
    lacks the last columns (None, as csv.DictReader has it)."""
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[Record] = []
    start = 1  # the line the record being read starts on
    try:
        header = next(reader, [])
        _refuse_repeated_names(header, path)
        last = (header, start)
        start = reader.line_num + 1
        for fields in reader:
            if fields:  # a blank line is no record (as csv.DictReader skips it)
                if len(fields) > len(header):
                    raise DataError(
                        f"{path}:{start}: {len(fields)} fields where the header names {len(header)}; "
                        f"quote values that hold a '{',' if fmt == 'csv' else 'tab'}'."
                    )
                rows.append(_record(dict(zip(header, fields + [None] * (len(header) - len(fields)))), start))
                last = (fields, start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise _csv_fault(text, start, delimiter, path, fmt, exc) from None
    _refuse_open_quote(text, *last, delimiter, path)
    return rows, header


def _refuse_repeated_names(header: list[str], path: Path) -> None:
    """A name twice in the header would leave one of its columns unread (a dict keeps the last)."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            what = f"column {name!r} appears twice in the header" if name else "two columns have no name in the header"
            raise DataError(
                f"{path}:1: {what} (columns {seen[name]} and {number}); {'rename one' if name else 'name them'}."
            )
        seen[name] = number


def _near_name(column: str, header: Sequence[str]) -> str:
    """A hint when the header holds ``column`` with spaces around it or in other case ('text, label'
    gives a column ' label')."""
    near = next((name for name in header if name.strip().casefold() == column.casefold()), None)
    return "" if near is None else f"; {near!r} differs from it only by spaces or case"


_BREAK = re.compile(r"\r\n|\r|\n")  # the line breaks csv reads with newline=""
_QUOTED = re.compile(r'"[^"]*(?:""[^"]*)*')  # a quoted field up to its closing quote (a doubled quote is a quote)


def _refuse_open_quote(text: str, fields: list[str], line: int, delimiter: str, path: Path) -> None:
    """The csv module reads a quote that is never closed as a value holding the rest of the file; such
    a value is the last field of the last record and the file ends in it, written as a quote followed
    by the value (its quotes doubled). Only then is the record scanned to be sure."""
    if fields and text.endswith('"' + fields[-1].replace('"', '""')):
        opened = _open_quote(text, _line_offset(text, line), delimiter)
        if opened is not None:
            raise _never_closed(text, opened, path)


def _matched(pattern: re.Pattern[str], text: str, at: int) -> int:
    """Where ``pattern``, which matches at any offset (possibly nothing), ends from ``at``."""
    match = pattern.match(text, at)
    assert match is not None, pattern.pattern
    return match.end()


def _open_quote(text: str, at: int, delimiter: str) -> int | None:
    """Where a quoted field opens that no quote closes, reading CSV records from offset ``at`` as the
    csv module does (a quote inside an unquoted field is a character), or None."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*")
    while at < len(text):
        if text[at] == '"':
            closing = _matched(_QUOTED, text, at)
            if closing == len(text):
                return at
            at = closing + 1
        at = _matched(unquoted, text, at) + 1  # past the field and the delimiter or line break after it
    return None


def _line_offset(text: str, line: int) -> int:
    if line == 1:
        return 0
    return next(itertools.islice(_BREAK.finditer(text), line - 2, None)).end()


def _never_closed(text: str, opened: int, path: Path) -> DataError:
    line = len(_BREAK.findall(text, 0, opened)) + 1
    return DataError(
        f"{path}:{line}: a quote opened here is never closed (the rest of the file would be read into one value); "
        "close it or remove the stray '\"'."
    )


def _csv_fault(text: str, start: int, delimiter: str, path: Path, fmt: str, exc: csv.Error) -> DataError:
    """csv's own error, at the record it stopped in: there, a quote never closed runs into the field
    size limit long before the end of a large file."""
    opened = _open_quote(text, _line_offset(text, start), delimiter)
    if opened is not None:
        return _never_closed(text, opened, path)
    return DataError(f"{path}:{start}: not readable as {fmt.upper()} ({exc}); fix the quoting there.")


# -- CoNLL -----------------------------------------------------------------------------------------

DOCSTART = "-DOCSTART-"


class Sentence(list):
    """One sentence of (token, tag) pairs, knowing the line of each token (for errors that name it);
    it equals the plain list of its pairs."""

    def __init__(self, pairs: Sequence[tuple[str, str]] = (), lines: Sequence[int] = ()) -> None:
        super().__init__(pairs)
        self.lines = list(lines)

    @property
    def line(self) -> int:
        return self.lines[0]


# a first line whose first field is one of HEADER_TOKENS and last one of HEADER_TAGS names columns
HEADER_TOKENS = frozenset({"token", "tokens", "word", "words", "form", "text", "tok"})
HEADER_TAGS = frozenset({"tag", "tags", "label", "labels", "ner", "pos", "upos", "xpos", "chunk"})


def read_conll(
    path: Path, where: str, *, comment_prefix: str | None = None, account: DataAccount | None = None
) -> list[Sentence]:
    """Sentences of (token, tag) from CoNLL-style text: ``token<TAB>tag`` per line (or, on a line
    without a tab, fields separated by spaces; extra columns between them are ignored: the first is
    the token, the last the tag), a blank line between sentences.

    Every other line is data: a token may start with ``#`` (hashtags are tokens). Only
    ``-DOCSTART-`` lines and, when ``comment_prefix`` is set, lines starting with it are skipped,
    and ``account`` counts them.

    Whitespace: each tab-separated field is stripped of the spaces around it (``tok <TAB>TAG `` reads
    as ``tok``, ``TAG``; a token keeps spaces inside it); ``account`` counts the lines where that
    changed the token or tag. A line of only spaces or tabs ends a sentence like an empty one,
    counted where it is the only break between two sentences. A byte-order mark at the start is
    stripped (counted); a header line (``token<TAB>tag``) is refused: CoNLL files have none."""
    lines = io.StringIO(read_text(path, where, account), newline=None)  # universal newlines: '\r\n' ends a line too
    sentences: list[Sentence] = []
    current = Sentence()
    counts = dict.fromkeys(("docstarts", "comments", "spaced", "space_breaks"), 0)
    space_lines, empty_line = 0, False  # the lines between the last sentence and the next token
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            if current:
                sentences.append(current)
                current, space_lines, empty_line = Sentence(), 0, False
            space_lines, empty_line = space_lines + bool(line), empty_line or not line
            continue
        if comment_prefix and line.startswith(comment_prefix):
            counts["comments"] += 1
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if fields[0].strip() == DOCSTART:
            counts["docstarts"] += 1
            continue
        token, tag = _conll_fields(fields, line, path, number, counts)
        if not sentences and not current:
            _refuse_header(token, tag, line, path, number)
        if sentences and not current and not empty_line:  # these lines alone kept two sentences apart
            counts["space_breaks"] += space_lines
        current.append((token, tag))
        current.lines.append(number)
    if current:
        sentences.append(current)
    if not sentences:
        raise DataError(f"{path}: holds no sentences; give 'token<TAB>tag' lines with a blank line between sentences.")
    if account is not None:
        _count_conll(account, counts, path, comment_prefix)
    return sentences


def _conll_fields(fields: list[str], line: str, path: Path, number: int, counts: dict[str, int]) -> tuple[str, str]:
    """The token and tag of a CoNLL line's ``fields``, stripped of the spaces around them (counted in ``counts``)."""
    token, tag = fields[0].strip(), fields[-1].strip()
    if len(fields) < 2 or not token or not tag:
        raise DataError(
            f"{path}:{number}: expected 'token<TAB>tag', found {line[:60]!r}; separate token and tag by a tab."
        )
    counts["spaced"] += (token, tag) != (fields[0], fields[-1])
    return token, tag


def _refuse_header(token: str, tag: str, line: str, path: Path, number: int) -> None:
    # a header would be read as a one-token sentence tagged 'tag', and 'tag' learnt as a class
    if token.casefold() in HEADER_TOKENS and tag.casefold() in HEADER_TAGS:
        raise DataError(f"{path}:{number}: {line!r} looks like a header line; CoNLL files have none: remove it.")


def _count_conll(account: DataAccount, counts: dict[str, int], path: Path, comment_prefix: str | None) -> None:
    account.add_for("docstart_lines", counts["docstarts"], f"'{DOCSTART}' document separator lines skipped in", path)
    account.add_for(
        "comment_lines",
        counts["comments"],
        f"comment lines (starting with data.comment_prefix {comment_prefix!r}) skipped in",
        path,
    )
    account.add_for(
        "space_only_lines", counts["space_breaks"], "lines of only spaces or tabs read as sentence breaks in", path
    )
    account.add_for(
        "spaced_fields", counts["spaced"], "lines whose token or tag had spaces around it, stripped, in", path
    )
