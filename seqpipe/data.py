"""Preparing users' data for a task: where it comes from (:class:`DataSource`), splitting it
reproducibly, grouping long-format rows into sequences, reading a column as text, numbers or times,
and batching. Reading the files themselves is :mod:`seqpipe.readers`; label spelling checks are
:mod:`seqpipe.labels`; the account of what was skipped is :mod:`seqpipe.account`."""

from __future__ import annotations

import datetime
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from seqpipe.account import DataAccount
from seqpipe.batching import BUCKET_CHUNK_BATCHES, batched, bucketed_order  # noqa: F401  (tasks import them from here)
from seqpipe.errors import DataError
from seqpipe.labels import LabelSpellings
from seqpipe.readers import (
    BOM,
    DOCSTART,
    FORMATS,
    HEADER_TAGS,
    HEADER_TOKENS,
    Record,
    Sentence,
    _record,  # group_steps makes its records as the readers make theirs
    infer_format,
    read_conll,
    read_records,
    read_text,
)

if TYPE_CHECKING:  # the engine's config, named for readers of the code only: this module sits below the engine
    from seqpipe.config import DataConfig

__all__ = [
    "DataSource",
    "group_steps",
    "text_values",
    "number",
    "FLOAT32_MAX",
    "time_value",
    "split_three",
    "batched",
    "BUCKET_CHUNK_BATCHES",
    "bucketed_order",
    # re-exported: these lived here before reading moved to seqpipe.readers, seqpipe.labels and
    # seqpipe.account, and tasks, plugins and tests import them from here; keep them importable
    "DataAccount",
    "LabelSpellings",
    "Record",
    "read_records",
    "read_text",
    "BOM",
    "FORMATS",
    "infer_format",
    "read_conll",
    "Sentence",
    "DOCSTART",
    "HEADER_TOKENS",
    "HEADER_TAGS",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DataSource:
    """Where a task reads its data: the training file (or the only file), its format, the given
    validation and test files if any, and a label for error messages. ``account`` collects what
    reading skipped or cut short; the engine reports it."""

    path: Path
    format: str
    config: DataConfig
    where: str
    validation_path: Path | None = None
    test_path: Path | None = None
    account: DataAccount = field(default_factory=DataAccount, compare=False)
    input: Any = (
        None  # the pipeline's input encoding (seqpipe.inputs.InputEncoding), unfitted; None: the task reads no [input]
    )
    output: Any = None  # the output encoding of a task that writes tokens

    def records(self, path: Path, columns: Sequence[str], step_columns: Sequence[str] = ()) -> list[Record]:
        """The rows of ``path`` holding ``columns``; in long format (``data.sequence_column``), one
        record per sequence, whose ``step_columns`` hold a list (one value per step, in
        ``data.order_column`` order) and whose other columns must be the same on every step."""
        d = self.config
        if d.sequence_column is None:
            return read_records(path, self.format, columns, self.where, account=self.account)
        assert d.order_column is not None  # the config requires both of them or neither
        rows = read_records(
            path, self.format, [d.sequence_column, d.order_column, *columns], self.where, account=self.account
        )
        return group_steps(
            rows,
            d.sequence_column,
            d.order_column,
            [c for c in columns if c in step_columns],
            [c for c in columns if c not in step_columns],
            path,
        )

    def splits(
        self, read: Callable[[Path], list[T]], key: Callable[[T], Any] | None = None
    ) -> tuple[list[T], list[T], list[T]]:
        """Train, validation and test items: ``read`` applied to each given file; a split without
        its own file is cut from the training file (shuffled with ``data.split_seed``, stratified by
        ``key`` if given) by its fraction."""
        d = self.config
        items = read(self.path)
        given = {
            name: read(path) for name, path in (("validation", self.validation_path), ("test", self.test_path)) if path
        }
        cut = {
            "validation": 0.0 if "validation" in given else d.validation_fraction,
            "test": 0.0 if "test" in given else d.test_fraction,
        }
        train, validation, test = (
            split_three(items, cut["validation"], cut["test"], d.split_seed, key=key)
            if cut["validation"] or cut["test"]
            else (items, [], [])
        )
        return train, given.get("validation", validation), given.get("test", test)


def group_steps(
    rows: Sequence[Record],
    sequence_column: str,
    order_column: str,
    step_columns: Sequence[str],
    fixed_columns: Sequence[str],
    path: Path,
) -> list[Record]:
    """Long-format rows (one per step) → one record per sequence, in order of first appearance.
    ``step_columns`` become lists ordered by ``order_column`` (numbers; a repeated step is refused);
    ``fixed_columns`` (a sequence's label) must hold one value for the whole sequence."""
    groups: dict[str, list[Record]] = {}
    for row in rows:
        groups.setdefault(str(row[sequence_column]), []).append(row)
    records = []
    for name, steps in groups.items():
        order: dict[float, Record] = {}
        for row in steps:
            at = number(row, order_column, path, f"data.order_column '{order_column}' orders each sequence's steps")
            if at in order:
                raise DataError(
                    f"{path}:{row.line}: sequence {name!r} has step {at:g} twice (also line {order[at].line}); "
                    "give each step of a sequence its own order value."
                )
            order[at] = row
        ordered = [order[at] for at in sorted(order)]
        for column in fixed_columns:
            changed = next((row for row in ordered if row[column] != ordered[0][column]), None)
            if changed is not None:
                raise DataError(
                    f"{path}:{changed.line}: column '{column}' changes within sequence {name!r} "
                    f"({ordered[0][column]!r} on line {ordered[0].line}); it is read once per sequence."
                )
        record = _record(
            {
                sequence_column: name,
                **{c: ordered[0][c] for c in fixed_columns},
                **{c: [row[c] for row in ordered] for c in step_columns},
            },
            ordered[0].line,
        )
        record.step_lines = [row.line for row in ordered]
        records.append(record)
    return records


def text_values(
    rows: Sequence[Record], column: str, path: Path, task: str, encoding: str = "characters", table: str = "input"
) -> list[str]:
    """The text in ``column`` of every row; numbers are refused, never read as characters.

    A JSON value that is not a string (a number, a list of number vectors) is refused at its line;
    a CSV column whose every value reads as a number (or a JSON list of numbers) is refused too:
    its characters would be learnt as if they were text."""
    for row in rows:
        value = row[column]
        if not isinstance(value, str):
            kind = (
                "a list"
                if isinstance(value, list)
                else "a table"
                if isinstance(value, dict)
                else f"the {type(value).__name__} {value!r}"
            )
            raise DataError(
                f"{path}:{row.line}: column '{column}' holds {kind}, not text; the {task} task reads '{column}' "
                f'as text ({table}.kind = "{encoding}"): point {table}.column at a text column, give the text as a '
                + (
                    'JSON string, or for number vectors set input.kind = "numbers".'
                    if table == "input"
                    else "JSON string."
                )
            )
    # CSV cells are untyped: a column that reads as numbers everywhere is numbers (JSON strings are text)
    if not rows[0].typed and all(reads_as_numbers(row[column]) for row in rows):
        raise DataError(
            f"{path}:{rows[0].line}: column '{column}' holds numbers in every record (here {rows[0][column][:40]!r}), "
            f'not text; the {task} task would learn their characters ({table}.kind = "{encoding}"): point '
            f"{table}.column "
            + (
                'at a text column, or for numbers set input.kind = "numbers".'
                if table == "input"
                else "at a text column (digits written as JSON strings in JSON Lines are text)."
            )
        )
    return [row[column] for row in rows]


def reads_as_numbers(value: str) -> bool:
    """A number, or a JSON list of numbers (or of lists of them), as text."""
    text = value.strip()
    try:
        float(text)
        return True
    except ValueError:
        pass
    if not text.startswith("["):
        return False
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return False
    flat = parsed
    while isinstance(flat, list) and flat and isinstance(flat[0], list):
        flat = [x for item in flat for x in item]
    return isinstance(flat, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat)


def number(row: Record, column: str, path: Path, why: str) -> float:
    """``row[column]`` as a finite float (one a float32 holds: the models compute in it), or a
    :class:`DataError` naming the file, line and column; "nan", "inf" and 1e300 are refused too."""
    value = row[column]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}:{row.line}: column '{column}' holds {str(value)[:40]!r}, not a number; {why}."
        ) from None
    if not abs(number) <= FLOAT32_MAX:
        raise DataError(
            f"{path}:{row.line}: column '{column}' holds {str(value)[:40]!r}, not a finite number (float32, "
            f"|x| <= 3.4e38); fill in the missing value or remove the record."
        )
    return number


FLOAT32_MAX = 3.4028234663852886e38


def time_value(row: Record, column: str, path: Path) -> float | datetime.datetime:
    """``row[column]`` as a time: a number, or an ISO 8601 date or date-time (``2012-01-31``,
    ``2012/01/31``, ``2012-01-31T06:00``), a month (``2012-01``: its first day) or a quarter
    (``2012 Q1``, ``2012-Q1``: its first day); anything else is a :class:`DataError` naming the line."""
    value = str(row[column]).strip()
    try:
        return float(value)
    except ValueError:
        pass
    month = re.fullmatch(r"(\d{4})[-/](\d{1,2})", value)
    quarter = re.fullmatch(r"(\d{4})[ -]?Q([1-4])", value, flags=re.IGNORECASE)
    if month and 1 <= int(month[2]) <= 12:
        return datetime.datetime(int(month[1]), int(month[2]), 1)
    if quarter:
        return datetime.datetime(int(quarter[1]), 3 * int(quarter[2]) - 2, 1)
    try:
        return datetime.datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        raise DataError(
            f"{path}:{row.line}: column '{column}' holds {value[:40]!r}, neither a number nor an ISO date "
            "(e.g. 2012-01-31, or a month 2012-01, or a quarter 2012 Q1); fix it, or leave task.options.time_column "
            "out to keep the file's row order."
        ) from None


def split_three(
    items: Sequence[T], validation_fraction: float, test_fraction: float, seed: int, key=None
) -> tuple[list[T], list[T], list[T]]:
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
        validation += group[n_test : n_test + n_val]
        train += group[n_test + n_val :]
    for part in (train, validation, test):
        rng.shuffle(part)
    return train, validation, test
