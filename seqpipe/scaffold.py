"""``seqpipe init``: a first pipeline file for a data file.

The data file is read as ``seqpipe run`` reads it (same readers, same refusals), its columns are
sorted into kinds (text, token lists, number vectors, numbers, times, labels), and a task is
guessed when none is given. The file written sets only what the data decides (the file, the
columns, the input kind) and lists the task's default recipe as comments, so a wrong guess is one
visible line to change and the defaults stay seqpipe's own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from seqpipe.budget import FITTED
from seqpipe.config import ModelConfig, TrainingConfig
from seqpipe.errors import SeqpipeError
from seqpipe.readers import infer_format, read_conll, read_records

SAMPLE = 5000  # rows looked at to sort the columns into kinds
TIME_NAMES = {
    "time",
    "date",
    "datetime",
    "timestamp",
    "year",
    "month",
    "day",
    "week",
    "quarter",
    "period",
    "ds",
    "hour",
}
TEXT_NAMES = (
    "text",
    "sentence",
    "source",
    "input",
    "review",
    "comment",
    "message",
    "subject",
    "title",
    "body",
    "word",
    "name",
)
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "tag", "intent", "sentiment", "gender", "speaker")


@dataclass
class Column:
    name: str
    kind: str  # text | tokens | vectors | number | index (1, 2, 3, …) | time | other
    distinct: int = 0
    mean_length: float = 0.0  # text: characters; tokens and vectors: steps
    spaced: float = 0.0  # text: share of values with a space inside (words, not one token)


@dataclass
class DataShape:
    path: Path
    format: str
    rows: int
    columns: list[Column] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[Column]:
        return [c for c in self.columns if c.kind in kinds]


@dataclass
class Guess:
    """What the written pipeline file sets, and the words `init` says about it."""

    task: str
    tables: dict[str, dict[str, Any]]  # [data] is added by the writer
    notes: list[str]


def inspect_data(path: Path) -> DataShape:
    """The file's rows (read strictly, as a run reads them) and each column's kind."""
    where = str(path)
    fmt = infer_format(path, None, where)
    if fmt == "conll":
        return DataShape(path, fmt, len(read_conll(path, where)))
    rows = read_records(path, fmt, [], where)
    names = list(dict.fromkeys(name for row in rows[:SAMPLE] for name in row))
    return DataShape(
        path, fmt, len(rows), [_column(name, [row[name] for row in rows[:SAMPLE] if name in row]) for name in names]
    )


def _column(name: str, values: list[Any]) -> Column:
    present = [v for v in values if v not in (None, "")]
    if not present:
        return Column(name, "other")
    if all(isinstance(v, list) for v in present):
        if all(isinstance(x, str) for v in present for x in v):
            return Column(name, "tokens", len({tuple(v) for v in present}), sum(map(len, present)) / len(present))
        return Column(name, "vectors", len(present), sum(map(len, present)) / len(present))
    texts = [v if isinstance(v, str) else json.dumps(v) for v in present]
    if all(_vectors(t) for t in texts[:200]):
        return Column(
            name, "vectors", len(set(texts)), sum(len(json.loads(t)) for t in texts[:200]) / min(len(texts), 200)
        )
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) or _number(v) for v in present)
    if _times(texts) and (not numbers or name.strip().lower() in TIME_NAMES):
        return Column(name, "time", len(set(texts)))
    if numbers:
        values = [float(v) for v in present]
        if len(values) > 2 and all(
            b - a == 1 for a, b in zip(values, values[1:])
        ):  # 1, 2, 3, …: a row id, not a series
            return Column(name, "index", len(values))
        return Column(name, "number", len(set(texts)))
    return Column(
        name,
        "text",
        len(set(texts)),
        sum(map(len, texts)) / len(texts),
        sum(" " in t.strip() for t in texts) / len(texts),
    )


def _number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _vectors(text: str) -> bool:
    """Number vectors written as JSON text: a non-empty list of numbers or of lists of them."""
    from seqpipe.data import reads_as_numbers

    return text.lstrip().startswith("[") and text.strip() != "[]" and reads_as_numbers(text)


def _times(texts: list[str]) -> bool:
    from seqpipe.data import Record, time_value
    from seqpipe.errors import DataError

    for text in texts[:200]:
        record = Record({"t": text})
        record.line = 0
        try:
            time_value(record, "t", Path("-"))
        except DataError:
            return False
    return True


# -- guessing the task and the columns ------------------------------------------------------------


def _named(columns: list[Column], names: tuple[str, ...] | set[str]) -> Column | None:
    """The column whose name comes first in ``names`` (a ranking), if any has one of them."""
    ranked = [
        (list(names).index(c.name.strip().lower()), i) for i, c in enumerate(columns) if c.name.strip().lower() in names
    ]
    return columns[min(ranked)[1]] if ranked else None


def _label_like(shape: DataShape, exclude: Column | None = None) -> list[Column]:
    """Columns with few distinct values for the rows (at most 1 in 5, and at most 1,000): labels."""
    limit = min(1000, max(2, shape.rows // 5))
    return [c for c in shape.columns if c is not exclude and c.kind in ("text", "number") and 2 <= c.distinct <= limit]


def guess_task(shape: DataShape) -> str:
    if shape.format == "conll":
        return "tag"
    tokens = shape.of_kind("tokens")
    if len(tokens) >= 2:
        return "tag"
    texts, numbers = shape.of_kind("text"), shape.of_kind("number")
    if shape.of_kind("vectors") or tokens:
        return "classify"
    labels = _label_like(shape)
    free_texts = [c for c in texts if c not in labels]
    if len(free_texts) >= 2 and not labels:  # two texts and nothing to classify them by: one written from the other
        return "seq2seq"
    if free_texts or (texts and not numbers):
        return "classify"
    if numbers:
        return "forecast"
    raise SeqpipeError(
        f"{shape.path}: found no column to learn from ({', '.join(c.name for c in shape.columns)}); "
        "give --task and edit the pipeline file."
    )


def _input_table(column: Column) -> dict[str, Any]:
    if column.kind == "vectors":
        return {"kind": "numbers", "column": column.name}
    if column.kind == "tokens":
        return {"kind": "words", "column": column.name}
    return {"kind": "characters", "column": column.name}


def _main_input(shape: DataShape, label: Column | None) -> Column:
    for kinds in (("vectors",), ("tokens",), ("text",)):
        candidates = [c for c in shape.of_kind(*kinds) if c is not label]
        if candidates:
            named = _named(candidates, TEXT_NAMES)
            return named or max(candidates, key=lambda c: (c.mean_length, c.distinct))
    raise SeqpipeError(
        f"{shape.path}: no text, token-list or number-vector column to read "
        f"({', '.join(c.name for c in shape.columns)})."
    )


def guess(shape: DataShape, task: str) -> Guess:
    """The tables for ``task`` on this data, and what was guessed, said in words."""
    columns = ", ".join(f"{c.name} ({c.kind})" for c in shape.columns) or "token<TAB>tag lines"
    notes = [f"{shape.path}: {shape.rows} {'sentences' if shape.format == 'conll' else 'rows'}; columns: {columns}"]
    if task == "tag":
        if shape.format == "conll":
            return Guess(task, {"input": {"kind": "words"}}, notes)
        lists = shape.of_kind("tokens")
        if len(lists) < 2:
            raise SeqpipeError(
                f"{shape.path}: tagging reads a CoNLL file, or JSON Lines with a token list and a tag list per "
                "record; found no two list columns."
            )
        tags = _named(lists, ("tags", "labels", "ner_tags", "pos_tags", "tag")) or lists[1]
        tokens = next(c for c in lists if c is not tags)
        return Guess(
            task,
            {"input": {"kind": "words", "column": tokens.name}, "task": {"options": {"tag_column": tags.name}}},
            notes,
        )
    if task == "classify":
        labels = _label_like(shape)
        label = _named(labels, LABEL_NAMES) or (labels[-1] if labels else None)
        if label is None:
            raise SeqpipeError(
                f"{shape.path}: found no label column (a column with few distinct values) among "
                f"{', '.join(c.name for c in shape.columns)}; classification needs one."
            )
        source = _main_input(shape, label)
        notes.append(
            f"input: column '{source.name}' read as {_input_table(source)['kind']}; label: column '{label.name}' "
            f"({label.distinct} labels)"
        )
        return Guess(task, {"input": _input_table(source), "task": {"options": {"label_column": label.name}}}, notes)
    if task == "forecast":
        numbers = shape.of_kind("number")
        if not numbers:
            raise SeqpipeError(f"{shape.path}: a forecast needs a column of numbers; found {columns}.")
        value = _named(numbers, ("value", "y", "target", "count", "sales", "load")) or numbers[0]
        times = shape.of_kind("time")
        options: dict[str, Any] = {"value_column": value.name}
        if times:
            options["time_column"] = times[0].name
        others = [c.name for c in numbers if c is not value]
        notes.append(
            f"forecast: column '{value.name}'"
            + (f", rows ordered by '{times[0].name}'" if times else ", rows in file order")
            + (
                f"; other number columns ({', '.join(others)}) can be covariates: task.options.input_columns"
                if others
                else ""
            )
        )
        return Guess(task, {"task": {"options": options}}, notes)
    if task == "seq2seq":
        labels = _label_like(shape)
        texts = [c for c in shape.of_kind("text", "tokens") if c not in labels] or shape.of_kind("text", "tokens")
        if len(texts) < 2:
            raise SeqpipeError(f"{shape.path}: an encoder-decoder reads a source and a target column; found {columns}.")
        source, target = texts[0], texts[1]
        output = {"kind": "words" if target.spaced > 0.5 else "characters", "column": target.name}
        notes.append(
            f"source: column '{source.name}' read as characters; target: column '{target.name}' written as "
            f"{output['kind']}"
        )
        return Guess(task, {"input": {"kind": "characters", "column": source.name}, "output": output}, notes)
    if task == "generate":
        texts = shape.of_kind("text")
        if not texts:
            raise SeqpipeError(f"{shape.path}: generation learns a text column; found {columns}.")
        labels = _label_like(shape)
        free = [c for c in texts if c not in labels] or texts
        text = _named(free, TEXT_NAMES) or free[0]
        condition = _named([c for c in labels if c is not text], LABEL_NAMES) or next(
            (c for c in labels if c is not text), None
        )
        if condition is None:
            raise SeqpipeError(
                f"{shape.path}: generation starts each text from a condition column (a label); found {columns}."
            )
        notes.append(f"generate: texts of column '{text.name}', each started from its '{condition.name}'")
        return Guess(task, {"task": {"options": {"text_column": text.name, "condition_column": condition.name}}}, notes)
    return Guess(
        task, {}, notes + [f"task '{task}' is a plugin's: its options are listed as comments; set its columns there"]
    )


# -- writing ----------------------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace(
            "\x7f", "\\u007f"
        )  # a TOML basic string (TOML refuses a raw DEL)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def _commented_defaults(
    model: type[BaseModel], set_here: dict[str, Any], chosen: dict[str, str] | None = None
) -> list[str]:
    """Each field of ``model`` with its default, commented out (``# key = default  # what it is``);
    ``chosen``: fields whose value seqpipe fits to the data when unset, with what to say instead."""
    lines = []
    for name, info in model.model_fields.items():
        if name in set_here or info.is_required():
            continue
        if chosen and name in chosen:
            lines.append(f"{'# ' + name + ' = ...':<36}# {chosen[name]}")
            continue
        default = info.get_default(call_default_factory=True)
        if default is None or isinstance(default, dict) or (isinstance(default, list) and not default):
            shown = f"# {name} = ..."
        else:
            try:
                shown = f"# {name} = {_toml(default)}"
            except TypeError:
                continue
        lines.append(f"{shown:<36}# {_first_clause(info.description)}" if info.description else shown)
    return lines


def _first_clause(description: str) -> str:
    """A field's description up to its first ';' (without a parenthesis left open there)."""
    clause = description.split("; ")[0]
    if clause.count("(") > clause.count(")"):
        clause = clause[: clause.rfind("(")].rstrip(" ,:")
    return clause


def pipeline_text(shape: DataShape, found: Guess, data_path: str, task_options: type[BaseModel] | None) -> str:
    lines = [
        f"# A first pipeline for {shape.path.name}, written by `seqpipe init`: check the guessed lines, then",
        "#   seqpipe check THIS_FILE   and   seqpipe run THIS_FILE",
        "# Commented lines show seqpipe's defaults ('...': chosen from the data, or none): uncomment one to set it.",
        "",
        "[data]",
        f"path = {_toml(data_path)}",
        "# validation_fraction = 0.1           # the share of rows held out to pick the best epoch",
        "# test_fraction = 0.2                 # the share held out for the final figures",
        "",
    ]
    for key in ("input", "output"):
        if key in found.tables:
            lines += [f"[{key}]"] + [f"{k} = {_toml(v)}" for k, v in found.tables[key].items()] + [""]
    options = found.tables.get("task", {}).get("options", {})
    lines += ["[task]", f"name = {_toml(found.task)}", "", "[task.options]"]
    lines += [f"{k} = {_toml(v)}" for k, v in options.items()]
    if task_options is not None:
        lines += _commented_defaults(task_options, options)
    lines += ["", "# The default recipe: uncomment a line to change it.", "# [model]"]
    lines += _commented_defaults(ModelConfig, {"cell_options": 0, "topology_options": 0})
    lines += ["", "# [training]"]
    fitted = "fitted to the training split's size when unset (`seqpipe check` prints the values)"
    lines += _commented_defaults(TrainingConfig, {}, {key: fitted for key in FITTED})
    return "\n".join(lines) + "\n"


def write_pipeline(
    data: Path, task: str | None, out: Path | None, registry: Any, force: bool = False
) -> tuple[Path, Guess]:
    """Write the pipeline file for ``data`` (``task`` guessed when None) to ``out`` (default: the
    data file's name with .toml, in the current folder); a file already there is kept unless ``force``."""
    if not data.is_file():
        raise SeqpipeError(f"{data}: no such data file; give a CSV, TSV, JSON Lines or CoNLL file.")
    shape = inspect_data(data)
    chosen = task or guess_task(shape)
    entry = registry.get("task", chosen, "--task")
    found = guess(shape, chosen)
    if task is None:
        found.notes.append(f"task: {chosen} (guessed; choose another with --task)")
    target = out or Path(re.sub(r"[^\w.-]+", "-", data.stem) + ".toml")
    if target.exists() and not force:
        raise SeqpipeError(f"{target}: already exists; choose another file with --out, or --force to replace it.")
    relative = Path(os.path.relpath(data.resolve(), target.resolve().parent)).as_posix()
    text = pipeline_text(shape, found, relative, getattr(entry.obj, "Options", None))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target, found
