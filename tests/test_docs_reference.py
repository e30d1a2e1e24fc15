"""The pipeline-file reference (docs/reference.md) against the models that validate pipeline files.

Every key of every section in ``seqpipe/config.py``, and every option of the built-in encodings,
cells, topologies and tasks, is documented on the page, and every key the page documents exists.
The page's convention: a heading whose first code span names the table (``## `[data]```,
``### `[task.options]` classify``), followed by a table whose first column is each key in a code span."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from seqpipe import config
from seqpipe.builtin import cells, encodings, topologies
from seqpipe.builtin.classify import task as classify
from seqpipe.builtin.forecast import task as forecast
from seqpipe.builtin.generate import task as generate
from seqpipe.builtin.seq2seq import task as seq2seq
from seqpipe.builtin.tag import task as tag

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def _registered(*hooks) -> dict[str, type]:
    found: dict[str, type] = {}
    for hook in hooks:
        hook(lambda name, obj: found.__setitem__(name, obj))
    return found


def _fields(model: type[BaseModel] | None) -> set[str]:
    return set(model.model_fields) if model is not None else set()


def _expected() -> dict[str, set[str]]:
    """Each documented table's name -> the keys its model accepts."""
    tables = {
        f"[{name}]": _fields(getattr(config, cls))
        for name, cls in (
            ("data", "DataConfig"),
            ("model", "ModelConfig"),
            ("task", "TaskConfig"),
            ("training", "TrainingConfig"),
            ("export", "ExportConfig"),
            ("tune", "TuneConfig"),
            ("tune.space", "Range"),
        )
    }
    for kind, encoding in _registered(encodings.register_encodings).items():
        tables[f"[input] {kind}"] = _fields(encoding.Options)
    for name, cell in _registered(cells.register_cells).items():
        tables[f"[model.cell_options] {name}"] = _fields(getattr(cell, "Options", None))
    for name, topology in _registered(topologies.register_topologies).items():
        tables[f"[model.topology_options] {name}"] = _fields(getattr(topology, "Options", None))
    tasks = _registered(*(module.register_tasks for module in (classify, tag, forecast, generate, seq2seq)))
    for name, task in tasks.items():
        tables[f"[task.options] {name}"] = _fields(task.Options)
    return tables


def _documented() -> dict[str, set[str]]:
    """Each table heading on the page -> the keys in the table under it."""
    tables: dict[str, set[str]] = {}
    current = None
    in_code = False
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = re.match(r"#{2,3} `(\[[^\]]+\])`(.*)$", line)
        if heading:
            current = (heading.group(1) + " " + heading.group(2).strip()).strip()
            tables.setdefault(current, set())
        elif line.startswith("#"):
            current = None
        elif current and line.startswith("| `"):
            tables[current].add(re.match(r"\| `([^`]+)`", line).group(1))
    return tables


def test_every_section_of_the_pipeline_file_is_documented():
    documented = _documented()
    sections = set(config.PipelineConfig.model_fields)
    assert sections == {"data", "input", "output", "model", "task", "training", "export", "tune"}, sections
    assert {f"[{name}]" for name in sections} <= set(documented), sorted(documented)


def test_every_key_the_models_accept_is_documented():
    documented = _documented()
    missing = {table: sorted(keys - documented.get(table, set())) for table, keys in _expected().items()}
    missing = {table: keys for table, keys in missing.items() if keys}
    assert not missing, f"keys missing from docs/reference.md: {missing}"
    unknown_tables = set(_expected()) - set(documented)
    assert not unknown_tables, f"tables with no heading in docs/reference.md: {sorted(unknown_tables)}"


def test_every_documented_key_exists():
    expected = _expected()
    encoding_keys = set().union(*(keys for table, keys in expected.items() if table.startswith("[input] ")))
    stale = {}
    for table, keys in _documented().items():
        accepted = encoding_keys if table in ("[input]", "[output]") else expected.get(table)
        assert accepted is not None, f"docs/reference.md documents a table no model has: {table}"
        if keys - accepted:
            stale[table] = sorted(keys - accepted)
    assert not stale, f"keys documented in docs/reference.md that no model accepts: {stale}"
