"""Every malformed pipeline file gets one line naming file and key, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqpipe.cli import main

GOOD = """
[data]
dataset = "spam-assassin"

[model]
cell = "gru"
topology = "single"
hidden_size = 32

[task]
name = "classify"

[training]
epochs = 2
"""

# (description, text replacing GOOD, fragments the one-line error must contain)
CASES = [
    ("toml syntax", GOOD.replace('cell = "gru"', 'cell = "gru'), ["invalid TOML", "line"]),
    ("unknown section", GOOD + "\n[modle]\ncell = 'gru'\n", ["modle", "unknown key", "did you mean 'model'"]),
    ("unknown key", GOOD.replace("hidden_size", "hiden_size"), ["model.hiden_size", "did you mean 'hidden_size'"]),
    (
        "wrong type",
        GOOD.replace("hidden_size = 32", 'hidden_size = "big"'),
        ["model.hidden_size", "expected an integer", "'big'"],
    ),
    ("out of range", GOOD.replace("epochs = 2", "epochs = 0"), ["training.epochs", ">= 1", "found 0"]),
    ("negative size", GOOD.replace("hidden_size = 32", "hidden_size = -3"), ["model.hidden_size", "found -3"]),
    (
        "unknown cell",
        GOOD.replace('cell = "gru"', 'cell = "gur"'),
        ["model.cell", "unknown cell 'gur'", "did you mean 'gru'"],
    ),
    (
        "unknown topology",
        GOOD.replace('topology = "single"', 'topology = "stackd"'),
        ["model.topology", "did you mean 'stacked'"],
    ),
    ("unknown task", GOOD.replace('name = "classify"', 'name = "clasify"'), ["task.name", "did you mean 'classify'"]),
    (
        "unknown dataset",
        GOOD.replace('"spam-assassin"', '"spam-asassin"'),
        ["data.dataset", "did you mean 'spam-assassin'"],
    ),
    ("no data source", GOOD.replace('dataset = "spam-assassin"', ""), ["data", "exactly one of"]),
    ("missing data section", GOOD.replace('[data]\ndataset = "spam-assassin"', ""), ["data: missing"]),
    (
        "missing data file",
        GOOD.replace('dataset = "spam-assassin"', 'path = "nope.csv"'),
        ["data.path", "nope.csv", "does not exist"],
    ),
    ("bad literal", GOOD + '\n[export]\nexporter = "dynamoo"\n', ["export.exporter", "did you mean 'dynamo'"]),
    (
        "section not a table",
        "training = 3\n" + GOOD.replace("[training]\nepochs = 2", ""),
        ["training", "expected a table"],
    ),
    (
        "cell option unknown",
        GOOD.replace('topology = "single"', 'topology = "single"\ncell_options = {biass = false}'),
        ["model.cell_options.biass", "did you mean 'bias'"],
    ),
    (
        "topology option type",
        GOOD.replace('topology = "single"', 'topology = "stacked"\ntopology_options = {num_layers = "two"}'),
        ["model.topology_options.num_layers", "expected an integer"],
    ),
    ("task option range", GOOD + "\n[task.options]\nembedding_size = 0\n", ["task.options.embedding_size", ">= 1"]),
    (
        "task option unknown",
        GOOD + "\n[task.options]\nlabel_colum = 'x'\n",
        ["task.options.label_colum", "did you mean 'label_column'"],
    ),
    ("input option range", GOOD + "\n[input]\nmax_length = 0\n", ["input.max_length", ">= 1"]),
    ("input option unknown", GOOD + "\n[input]\nlowercas = true\n", ["input.lowercas", "did you mean 'lowercase'"]),
    (
        "input kind unknown",
        GOOD + "\n[input]\nkind = 'charcters'\n",
        ["input.kind", "unknown encoding 'charcters'", "did you mean 'characters'"],
    ),
    (
        "input kind for a task without one",
        GOOD.replace('"classify"', '"forecast"') + "\n[input]\nkind = 'numbers'\n",
        ["input: task 'forecast' takes no [input] table"],
    ),
    (
        "step graph of bidirectional",
        GOOD.replace('topology = "single"', 'topology = "bidirectional"') + '\n[export]\ngraphs = ["step"]\n',
        ["export.graphs", "'step' needs a causal topology", "'bidirectional'"],
    ),
    ("unknown graph", GOOD + '\n[export]\ngraphs = ["stepp"]\n', ["export.graphs.0", "did you mean 'step'"]),
    (
        "initial state typo",
        GOOD.replace("hidden_size = 32", 'hidden_size = 32\ninitial_state = "learned"'),
        ["model.initial_state", "did you mean 'learnable'"],
    ),
    (
        "bidirectional merge",
        GOOD.replace('topology = "single"', 'topology = "bidirectional"\ntopology_options = {merge = "mean"}'),
        ["model.topology_options.merge", "'concat' or 'sum'", "'mean'"],
    ),
    (
        "word characters for a task that reads one id per word",
        GOOD.replace('"classify"', '"seq2seq"').replace('"spam-assassin"', '"thai-english"')
        + "\n[input]\nkind = 'words'\ncolumn = 'source'\ncharacters = 8\n",
        ["input.characters", "task 'seq2seq' reads one id per word", "remove input.characters"],
    ),
    (
        "word characters in an output",
        GOOD.replace('"classify"', '"seq2seq"').replace('"spam-assassin"', '"thai-english"')
        + "\n[output]\nkind = 'words'\ncolumn = 'target'\ncharacters = 8\n",
        ["output.characters", "task 'seq2seq' writes word ids alone", "remove output.characters"],
    ),
    (
        "another input kind's option",
        GOOD + "\n[input]\nkind = 'characters'\ncharacters = 16\n",
        [
            "input.characters",
            'kind "characters" takes no characters (kind "words" does)',
            "change input.kind or remove characters",
        ],
    ),
    (
        "word characters out of range",
        GOOD + "\n[input]\nkind = 'words'\ncharacters = 65\n",
        ["input.characters", "<= 64"],
    ),
    (
        "quoted number, never read as one",
        GOOD.replace("hidden_size = 32", 'hidden_size = "32"'),
        ["model.hidden_size", "expected an integer", 'found "32"', "no quotes"],
    ),
    (
        "true where a number is read",
        GOOD.replace("epochs = 2", "epochs = true"),
        ["training.epochs", "expected an integer", "found true"],
    ),
    (
        "number where true/false is read",
        GOOD + "\n[input]\nlowercase = 1\n",
        ["input.lowercase", "expected true or false", "found 1"],
    ),
    (
        "quoted number in task options",
        GOOD + '\n[task.options]\ndropout = "0.2"\n',
        ["task.options.dropout", "expected a number"],
    ),
    (
        "character features without characters",
        GOOD + "\n[input]\nkind = 'words'\ncharacter_features = 16\n",
        ["input", "character_features sets the character CNN", "add characters"],
    ),
    ("not utf-8", None, ["UTF-8"]),
]


def _write(tmp_path: Path, text: str | None) -> Path:
    path = tmp_path / "pipeline.toml"
    if text is None:
        path.write_bytes(b"[data]\ndataset = '\xff\xfe'\n")
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,text,fragments", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["check", "run"])
def test_malformed_pipeline_is_one_line_exit_2(tmp_path, name, text, fragments, command):
    path = _write(tmp_path, text)
    result = CliRunner().invoke(
        main, [command, str(path), "--out", str(tmp_path / "out")] if command == "run" else [command, str(path)]
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert not (tmp_path / "out").exists(), "nothing may be created before validation passes"


def test_several_faults_are_one_line_each(tmp_path):
    path = _write(tmp_path, GOOD.replace("hidden_size = 32", "hidden_size = -3").replace("epochs = 2", "epochs = 0"))
    result = CliRunner().invoke(main, ["check", str(path)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 2 and all(line.startswith(f"error: {path}: ") for line in lines), (
        result.output
    )
    assert "model.hidden_size" in result.output and "training.epochs" in result.output


def test_missing_pipeline_file_is_one_line():
    result = CliRunner().invoke(main, ["check", "does/not/exist.toml"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: does/not/exist.toml: no such pipeline file; check the path (ready-made ones are in pipelines/)."
    )


def test_real_process_prints_no_traceback(tmp_path):
    """Through the installed console script, not click's test runner."""
    path = _write(tmp_path, GOOD.replace('cell = "gru"', 'cell = "gur"'))
    proc = subprocess.run([sys.executable, "-m", "seqpipe", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "did you mean 'gru'" in proc.stderr


def test_good_pipeline_checks(tmp_path):
    result = CliRunner().invoke(main, ["check", str(_write(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


@pytest.mark.parametrize(
    "pipeline", sorted((Path(__file__).parents[1] / "pipelines").glob("*.toml")), ids=lambda p: p.name
)
def test_shipped_pipelines_check(pipeline):
    result = CliRunner().invoke(main, ["check", str(pipeline)])
    assert result.exit_code == 0, result.output
