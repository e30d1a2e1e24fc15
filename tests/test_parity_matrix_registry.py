"""The parity matrix over the registry's tasks: every registered task × cell × topology, exported
the way `seqpipe run` exports it, proven equal in torch and onnxruntime.

A task joins by declaring ``example_pipeline`` (a small pipeline on data a plugin registers; every
built-in task does), so an installed third-party task is covered like a built-in one, and so is an
installed cell or topology. Each combination is resolved by the engine (a combination the engine
refuses, such as generation on a bidirectional topology, is listed with the engine's reason), its
example data prepared, a small untrained model built, and every graph the run would write exported
and checked by ``seqpipe.exports.export_graphs``: the task's own graphs too (init, encoder,
decoder). Then hypothesis draws batches of the task's test sequences (any rows, any batch size,
lengths cut down to 1) and checks the step and sequence graphs on them again.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.assembly import resolve_pipeline
from seqpipe.errors import ConfigError
from seqpipe.onnx.parity import check_sequence_parity, check_step_parity
from seqpipe.testing import pipeline_tables, pipeline_toml
from test_parity_matrix import REGISTRY, TOPOLOGY_OPTIONS

HIDDEN = 8
PARITY_SEQUENCES = 24  # test sequences each export is checked on (and hypothesis draws from)
# pipeline files are written at collection time, before pytest's tmp_path exists
ROOT = Path(tempfile.mkdtemp(prefix="seqpipe-registry-matrix-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
REGISTRY_COVERAGE: dict[tuple[str, str, str], dict[str, str | int]] = {}


def _pipeline(task: str, cell: str, topology: str) -> Path | str | Exception:
    """The combination's pipeline file (the cell with its ``example_options``); or why the engine
    refuses the combination; or the exception a broken plugin raised, for its own row to raise."""
    try:
        task_cls = REGISTRY.get("task", task, "matrix").obj
        if task_cls.example_pipeline is None:
            return "not covered: the task declares no example_pipeline"
        topo_cls = REGISTRY.get("topology", topology, "matrix").obj
        options = {k: v for k, v in TOPOLOGY_OPTIONS.get(topology, {}).items() if k in topo_cls.Options.model_fields}
        tables = pipeline_tables(
            task_cls,
            task,
            cell=cell,
            topology=topology,
            hidden_size=HIDDEN,
            cell_options=REGISTRY.get("cell", cell, "matrix").obj.example_options,
            topology_options=options,
            parity_sequences=PARITY_SEQUENCES,
        )
        path = ROOT / f"{task}-{cell}-{topology}.toml"
        path.write_text(pipeline_toml(tables), encoding="utf-8")
        resolve_pipeline(path, REGISTRY)
    except ConfigError as exc:
        # the engine refusing a plugin's own options (its example) is the plugin's failure, not a refusal
        return exc if _plugin_options_rejected(exc) else "n/a: " + str(exc).split(": ", 2)[-1].split(";")[0]
    except Exception as exc:  # a plugin that breaks while resolving fails its own row, not the whole matrix
        return exc
    return path


def _plugin_options_rejected(exc: ConfigError) -> bool:
    """Whether the engine refused a plugin's options (a cell's example_options, a task's example
    pipeline) rather than the combination (a task that cannot use a topology)."""
    return any(f": {key}" in str(exc) for key in ("model.cell_options", "model.topology_options", "task.options"))


COMBINATIONS = []
BROKEN: dict[tuple[str, str, str], Exception] = {}  # what a broken plugin raised while its pipeline was resolved
for _task in REGISTRY.names("task"):
    for _cell in REGISTRY.names("cell"):
        for _topology in REGISTRY.names("topology"):
            _made = _pipeline(_task, _cell, _topology)
            if isinstance(_made, Exception):
                BROKEN[(_task, _cell, _topology)] = _made
            if not isinstance(_made, str):
                COMBINATIONS.append((_task, _cell, _topology))
            else:
                REGISTRY_COVERAGE[(_task, _cell, _topology)] = {"graphs": _made}


_PREPARED: dict[str, object] = {}


def _prepared(task: str, resolved):
    """The task on its example data, prepared once, by the first combination that gets this far (its
    vocabulary and splits do not depend on the model, and a broken cell's row never gets here)."""
    if task not in _PREPARED:
        prepared = resolved.make_task()
        prepared.prepare()
        _PREPARED[task] = prepared
    return _PREPARED[task]


@cache
def _exported(task: str, cell: str, topology: str):
    """Export every graph the run would write for this combination, on first use (a plugin that fails
    fails its own rows; `-k` builds only what it selects); return what the checks reuse."""
    row = REGISTRY_COVERAGE.setdefault((task, cell, topology), {})
    try:
        return _export(task, cell, topology, row)
    except Exception as exc:
        row["graphs"] = f"FAILED: {type(exc).__name__}"
        raise


def _export(task: str, cell: str, topology: str, row: dict):
    from seqpipe.exports import export_graphs
    from seqpipe.serving.runtime import SequenceRunner, StepRunner

    if (task, cell, topology) in BROKEN:
        raise BROKEN[(task, cell, topology)]
    resolved = resolve_pipeline(ROOT / f"{task}-{cell}-{topology}.toml", REGISTRY)
    prepared = _prepared(task, resolved)
    torch.manual_seed(0)
    model = prepared.build_model(
        resolved.make_topology, resolved.config.model.initial_state, resolved.config.model.initial_state_scale
    ).eval()
    if resolved.config.model.initial_state == "learnable":
        for value in model.initial.values.values():
            torch.nn.init.normal_(value, std=0.5)
    out = ROOT / f"{task}-{cell}-{topology}"
    out.mkdir(exist_ok=True)
    parity = export_graphs(resolved, prepared, model, out, log=lambda line: None)
    row["graphs"] = ", ".join(f"{kind} ({report['sequences']} seq)" for kind, report in parity["graphs"].items())
    core = {
        kind: (StepRunner if kind == "step" else SequenceRunner)(out / f"{kind}.onnx", device="cpu")
        for kind in ("step", "sequence")
        if kind in parity["graphs"]
    }
    inputs = None
    if core:  # the test sequences hypothesis draws from, and where each starts
        x, lengths = prepared.parity_inputs("test", PARITY_SEQUENCES)
        inputs = x, lengths, prepared.parity_start(model, "test", PARITY_SEQUENCES)
    return prepared, model, parity, core, inputs, resolved.config.export.parity_tolerance


cases = st.tuples(st.lists(st.integers(0, PARITY_SEQUENCES - 1), min_size=1, max_size=6), st.integers(1, 40))


@pytest.mark.parametrize("task,cell,topology", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_registered_task_parity(task, cell, topology):
    prepared, model, parity, core, inputs, tolerance = _exported(task, cell, topology)
    failed = {k: r["max_scaled_diff"] for k, r in parity["graphs"].items() if not r["passed"]}
    assert not failed, f"export parity failed: {failed}"
    if not core:  # the task's own graphs only (seq2seq): export_graphs checked them above
        return
    x, lengths, state0 = inputs
    row = REGISTRY_COVERAGE[(task, cell, topology)]

    @settings(max_examples=3, deadline=None, database=None)
    @given(case=cases)
    def drawn_batches(case):
        rows, cut = case
        rows = [r % len(x) for r in rows]
        xb, lb = x[rows], np.minimum(lengths[rows], cut)  # any rows, any batch size, lengths down to 1
        sb = None if state0 is None else {n: v[rows] for n, v in state0.items()}
        if "step" in core:
            report = check_step_parity(model, core["step"], xb, lb, tolerance, state0=sb)
            assert report["passed"], report["comparisons"]
        if "sequence" in core:
            report = check_sequence_parity(
                model, core["sequence"], xb, lb, tolerance, core.get("step"), per_step=prepared.sequence_y == "per_step"
            )
            assert report["passed"], report["comparisons"]
        row["cases"] = row.get("cases", 0) + 1

    drawn_batches()


def test_every_builtin_task_joins_the_matrix():
    covered = {task for task, _, _ in COMBINATIONS}
    assert {"classify", "tag", "generate", "seq2seq", "forecast"} <= covered
    # a cell with a required option joins with its example_options
    assert {("classify", "projected_lstm", "single"), ("seq2seq", "projected_lstm", "stacked")} <= set(COMBINATIONS)
    # the engine's refusals are listed, not silently dropped
    assert REGISTRY_COVERAGE[("generate", "gru", "bidirectional")]["graphs"].startswith("n/a")
