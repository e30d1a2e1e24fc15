"""The plugin guide (docs/plugins/) is real code: its cell, topology and task are run through
seqpipe's contract checks, then trained together as a pipeline that exports, passes parity and
learns; its input encoding is fitted, rebuilt from its metadata and trained with the built-in
classify task."""

from __future__ import annotations

import csv
import random
import re
import sys
import types
from pathlib import Path

import pytest

from seqpipe.run import run_pipeline
from seqpipe.testing import check_cell, check_topology

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins"
PAGES = {"cell": "cells.md", "topology": "topologies.md", "task": "tasks.md", "encoding": "encodings.md"}


def _guide_blocks() -> dict[str, str]:
    """The first python code block on each of the guide's cell, topology, task and encoding pages."""
    blocks = {}
    for kind, page in PAGES.items():
        text = (GUIDE / page).read_text(encoding="utf-8")
        blocks[kind] = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    return blocks


@pytest.fixture(scope="module")
def guide() -> dict[str, types.ModuleType]:
    modules = {}
    for kind, code in _guide_blocks().items():
        module = types.ModuleType(f"readme_{kind}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(code, f"docs/plugins/{PAGES[kind]}", "exec"), module.__dict__)
        modules[kind] = module
    yield modules
    for module in modules.values():
        sys.modules.pop(module.__name__, None)


def test_guide_cell_and_topology_pass_the_contract_checks(guide):
    check_cell(guide["cell"].LeakyCell)
    check_topology(guide["topology"].Residual, guide["cell"].LeakyCell)


def _numbers_csv(path: Path, rows: int = 600) -> Path:
    """Sequences of 3-12 numbers labelled by the sign of their sum: about half each."""
    rng = random.Random(0)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["values", "label"])
        for _ in range(rows):
            values = [round(rng.gauss(0, 1), 3) for _ in range(rng.randint(3, 12))]
            writer.writerow([" ".join(map(str, values)), "positive" if sum(values) > 0 else "negative"])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("cell,topology", [("leaky", "residual"), ("gru", "bidirectional")])
def test_guide_plugins_train_export_and_learn_together(guide, registry, tmp_path, cell, topology):
    """The guide's three together (Loops around the traced step graph), and the guide's task with a
    built-in bidirectional GRU (the engine's generic sequence graph from declared layers)."""
    registry.add("cell", "leaky", guide["cell"].LeakyCell, "readme_cell", "readme-example")
    registry.add("topology", "residual", guide["topology"].Residual, "readme_topology", "readme-example")
    registry.add("task", "numbers", guide["task"].NumbersTask, "readme_task", "readme-example")
    data = _numbers_csv(tmp_path / "numbers.csv")
    pipeline = tmp_path / "numbers.toml"
    pipeline.write_text(
        f"""
[data]
path = "{data.as_posix()}"

[model]
cell = "{cell}"
topology = "{topology}"
hidden_size = 16
{"[model.cell_options]" + chr(10) + "leak = 1.0" if cell == "leaky" else ""}

[task]
name = "numbers"

[training]
epochs = 12
batch_size = 32
learning_rate = 0.01

[export]
parity_sequences = 40
""",
        encoding="utf-8",
    )
    result = run_pipeline(pipeline, registry, str(tmp_path / "run"), log=lambda line: None)
    expected = {"step", "sequence"} if topology == "residual" else {"sequence"}
    assert result.parity["passed"] and set(result.parity["graphs"]) == expected
    labels = [row["label"] for row in csv.DictReader(data.open(encoding="utf-8"))]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    assert result.metrics["test"]["accuracy"] >= majority + 0.2, (result.metrics["test"], majority)


def test_guide_encoding_rebuilds_from_its_metadata(guide):
    bytes_cls = guide["encoding"].Bytes
    encoding = bytes_cls(bytes_cls.Options(max_length=4))
    encoding.fit(["ignored"])
    rebuilt = bytes_cls.from_spec(encoding.to_spec())
    assert encoding.encode("né!") == rebuilt.encode("né!") == [ord("n") + 1, 0xC3 + 1, 0xA9 + 1, ord("!") + 1]
    assert encoding.encode("longer") == [ord(c) + 1 for c in "long"] and encoding.steps("longer") == 6


@pytest.mark.slow
def test_guide_encoding_trains_a_classifier_and_refuses_numbers(guide, registry, tmp_path):
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.errors import DataError

    registry.add("encoding", "bytes", guide["encoding"].Bytes, "readme_encoding", "readme-example")
    data = tmp_path / "d.csv"
    rng = random.Random(0)
    rows = [
        ("".join(rng.choice("abc ") for _ in range(8)) + (" ja" if i % 2 else " nö"), "yes" if i % 2 else "no")
        for i in range(300)
    ]  # the answer is in the last bytes (ö is two)
    with data.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        '[data]\npath = "d.csv"\n[input]\nkind = "bytes"\n[model]\nhidden_size = 16\n[training]\nepochs = 6\n'
        "[export]\nparity_sequences = 40\n",
        encoding="utf-8",
    )
    result = run_pipeline(pipeline, registry, str(tmp_path / "run"), log=lambda line: None)
    assert result.parity["passed"] and result.metrics["test"]["accuracy"] >= 0.95
    data.write_text("text,label\n" + "".join(f"{i}.5,{'ab'[i % 2]}\n" for i in range(40)), encoding="utf-8")
    with pytest.raises(DataError, match="holds numbers in every record"):
        resolve_pipeline(pipeline, registry).prepare()
