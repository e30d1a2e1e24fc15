from __future__ import annotations

import csv
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from seqpipe.plugins import make_plugin_manager
from seqpipe.registry import build_registry

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One pytest worker per core (`tox` runs `-n auto`): a second torch thread per worker would only
    # fight the other worker for the same core. Child processes the tests start inherit the setting.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def registry():
    """A fresh registry from a fresh plugin manager (never a module-level global)."""
    pm, _ = make_plugin_manager(strict=False, warn=lambda line: None)
    return build_registry(pm)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    """200 rows of real spam/ham subjects: enough to train a step or two, quick to read."""
    source = REPO / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv"
    with source.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)
    path = tmp_path / "small.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows[:200])
    return path


def _write_pipeline(
    path: Path,
    data_path: Path,
    *,
    cell: str = "gru",
    topology: str = "single",
    extra: str = "",
    epochs: int = 1,
    hidden: int = 16,
    topology_options: str = "",
) -> Path:
    path.write_text(
        f"""
[data]
path = "{data_path.as_posix()}"

[model]
cell = "{cell}"
topology = "{topology}"
hidden_size = {hidden}
{topology_options}

[input]
max_length = 40

[task]
name = "classify"

[task.options]
embedding_size = 8

[training]
epochs = {epochs}
batch_size = 32
patience = 1

[export]
exporter = "torchscript"
parity_sequences = 40
{extra}
""",
        encoding="utf-8",
    )
    return path


def torch_blocked_environment(folder: Path) -> dict[str, str]:
    """Environment for a subprocess in which importing torch raises: what an embedding app has
    (a sitecustomize.py written into ``folder``)."""
    import os
    import textwrap

    (folder / "sitecustomize.py").write_text(
        textwrap.dedent("""
        import sys
        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _NoTorch())
    """)
    )
    # keep any PYTHONPATH the tests run under, so the subprocess imports the same seqpipe
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def torch_blocked_env(tmp_path_factory) -> dict[str, str]:
    """Environment for a subprocess in which importing torch raises."""
    return torch_blocked_environment(tmp_path_factory.mktemp("blocker"))


def load_trained(root: Path, pipeline: str = "p.toml", run: str = "out"):
    """(task, model) of the run ``root/run`` made from ``root/pipeline``: data prepared, best weights loaded, eval
    mode."""
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.checkpoint import load_checkpoint

    pm, _ = make_plugin_manager(strict=False, warn=lambda line: None)
    resolved = resolve_pipeline(root / pipeline, build_registry(pm))
    task = resolved.make_task()
    task.prepare()
    model = task.build_model(
        resolved.make_topology, resolved.config.model.initial_state, resolved.config.model.initial_state_scale
    )
    load_checkpoint(model, root / run / "model.safetensors")
    return task, model.eval()


def predict_without_torch(env: dict[str, str], *args: str) -> list[dict]:
    """``seqpipe predict ARGS --json`` in a process that cannot import torch; one dict per result."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", *args, "--json"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def write_pipeline():
    """``write_pipeline(path, data_path, cell=…, topology=…)``: a small, fast classify pipeline."""
    return _write_pipeline


# The three parity matrices fill a coverage table per module as they run. Under `-n auto` they run in
# worker processes, so each test's report carries its module's table to the controlling process,
# which prints the summaries.
MATRIX_TABLES = {
    "test_parity_matrix": "COVERAGE",
    "test_parity_matrix_tasks": "TASK_COVERAGE",
    "test_parity_matrix_registry": "REGISTRY_COVERAGE",
}
GATHERED: dict[str, dict] = {table: {} for table in MATRIX_TABLES.values()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    table = MATRIX_TABLES.get(item.module.__name__.rsplit(".", 1)[-1]) if item.module is not None else None
    if table and report.when == "teardown":
        rows = {key: dict(row) for key, row in getattr(item.module, table).items()}
        report.user_properties.append((f"matrix:{table}", rows))


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if isinstance(key, str) and key.startswith("matrix:"):
            GATHERED[key.removeprefix("matrix:")].update(value)


def pytest_terminal_summary(terminalreporter):
    """Print what the parity matrices covered: cases per graph, or why a graph does not exist."""
    if GATHERED["COVERAGE"]:
        _classify_matrix_summary(terminalreporter, GATHERED["COVERAGE"])
    if GATHERED["TASK_COVERAGE"]:
        _task_matrix_summary(terminalreporter, GATHERED["TASK_COVERAGE"])
    registry = GATHERED["REGISTRY_COVERAGE"]
    if any("cases" in row or "(" in row.get("graphs", "") for row in registry.values()):
        _registry_matrix_summary(terminalreporter, registry)


def _classify_matrix_summary(terminalreporter, coverage) -> None:
    total = sum(v for row in coverage.values() for v in row.values() if isinstance(v, int))
    terminalreporter.section(
        f"parity matrix: {total} graph checks on hypothesis-drawn ragged batches (classify task, native step graphs "
        "for built-in cells, fp32, tolerance 1e-5)"
    )
    c, t = _widths(coverage, 0), _widths(coverage, 1)
    terminalreporter.write_line(f"{'cell':<{c}}{'topology':<{t}}{'initial':<11}{'step graph':<32}{'sequence graph'}")
    for (cell, topology, rule), row in sorted(coverage.items()):
        cols = [
            f"{v} cases passed" if isinstance(v, int) else v for v in (row.get("step", "-"), row.get("sequence", "-"))
        ]
        if "sequence_kind" in row:
            cols[1] += f" ({row['sequence_kind']})"
        terminalreporter.write_line(f"{cell:<{c}}{topology:<{t}}{rule:<11}{cols[0]:<32}{cols[1]}")


def _task_matrix_summary(terminalreporter, coverage) -> None:
    total = sum(v for row in coverage.values() for v in row.values() if isinstance(v, int))
    terminalreporter.section(
        f"parity matrix, task shapes: {total} graph checks (tag: per-step outputs from token ids; "
        "tag_numbers: per-step outputs from number vectors; forecast: real-valued inputs, final output; "
        "classify_mean/max/attention: pooling heads, the step graph streaming the running statistics; "
        "step graphs traced by torch.onnx), tolerance 1e-5"
    )
    c, t = _widths(coverage, 1), _widths(coverage, 2)
    terminalreporter.write_line(f"{'shape':<20}{'cell':<{c}}{'topology':<{t}}{'step graph':<32}{'sequence graph'}")
    for (shape, cell, topology), row in sorted(coverage.items()):
        cols = [
            f"{v} cases passed" if isinstance(v, int) else v for v in (row.get("step", "-"), row.get("sequence", "-"))
        ]
        if "sequence_kind" in row:
            cols[1] += f" ({row['sequence_kind']})"
        terminalreporter.write_line(f"{shape:<20}{cell:<{c}}{topology:<{t}}{cols[0]:<32}{cols[1]}")


def _registry_matrix_summary(terminalreporter, coverage) -> None:
    total = sum(row.get("cases", 0) for row in coverage.values())
    terminalreporter.section(
        f"parity matrix, registered tasks: every graph `seqpipe run` writes, checked on the task's "
        f"example data, then {total} hypothesis-drawn batches of its test sequences (step and sequence graphs)"
    )
    c, t = _widths(coverage, 1), _widths(coverage, 2)
    terminalreporter.write_line(
        f"{'task':<10}{'cell':<{c}}{'topology':<{t}}{'drawn':<7}graphs exported and checked (test sequences)"
    )
    for (task, cell, topology), row in sorted(coverage.items()):
        drawn = str(row["cases"]) if "cases" in row else "-"
        terminalreporter.write_line(f"{task:<10}{cell:<{c}}{topology:<{t}}{drawn:<7}{row.get('graphs', '-')}")


def _widths(coverage, column: int) -> int:
    """A column wide enough for its longest name (a plugin's cell name may be long), and a gap."""
    return max([10, *(len(key[column]) + 2 for key in coverage)])


def pytest_collection_modifyitems(items):
    """Start the end-to-end trainings first: under `-n 2` the long ones then overlap the many short ones
    instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def assert_sentences_alone_equal_batched(onnx_dir: Path, x, lengths) -> None:
    """A per-step run's sequence graph on the padded batch ``x``/``lengths``, its step graph stepped
    over it, and each sentence run alone agree to 1e-5 on every valid step."""
    import numpy as np

    from seqpipe.serving.runtime import SequenceRunner, StepRunner

    sequence, step = (
        SequenceRunner(onnx_dir / "sequence.onnx", device="cpu"),
        StepRunner(onnx_dir / "step.onnx", device="cpu"),
    )
    y, _ = sequence.run(x, lengths)
    ys, _, _ = step.run_padded(x, lengths)
    for row, n in enumerate(lengths):
        alone, _ = sequence.run(x[row : row + 1, :n], lengths[row : row + 1])
        assert np.abs(alone[0] - y[row, :n]).max() <= 1e-5
        assert np.abs(ys[row, :n] - y[row, :n]).max() <= 1e-5


# -- a browser, for the pages seqpipe writes or ships ----------------------------------------------
def _chromium() -> str | None:
    for name in (os.environ.get("SEQPIPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright, or a skip saying what is missing (a failure when
    SEQPIPE_REQUIRE_BROWSER=1)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python is not installed (pip install playwright)"
    executable = _chromium()
    if missing is None and executable is None:
        missing = "no Chromium on PATH (apt-get install chromium, or set SEQPIPE_CHROMIUM)"
    if missing is not None:
        if os.environ.get("SEQPIPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SEQPIPE_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()
