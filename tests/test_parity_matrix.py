"""The parity matrix: every registered cell × topology, exported for the classify task, proven equal.

It iterates over the registry, so an installed third-party cell or topology joins by being installed.
Each combination is built (cells with their ``example_options``) and exported on first use, so a
plugin that fails to build fails its own rows and ``-k`` builds only what it selects; the graphs are
those `seqpipe run` writes (step: causal topologies; sequence: native operators or Loops over each
cell for a topology that declares its layers, else an ONNX Loop around the step graph for a causal
one), and hypothesis draws batches: sizes, ragged lengths (1 included).
Checked to 1e-5: torch step vs ORT step, torch sequence vs ORT sequence vs ORT step loop.
What was covered (and why a graph is absent) is printed in pytest's terminal summary.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.builtin.classify.task import ClassifierModel, ClassifyTask
from seqpipe.builtin.topologies import Stacked
from seqpipe.contracts import declares_layers
from seqpipe.models import token_embedding
from seqpipe.onnx.export import export_sequence, export_step
from seqpipe.onnx.native import native_support
from seqpipe.onnx.spec import write_metadata
from seqpipe.plugins import make_plugin_manager
from seqpipe.registry import build_registry
from seqpipe.serving.runtime import SequenceRunner, StepRunner

TOL = 1e-5
VOCAB, EMBED, HIDDEN, LABELS = 23, 6, 10, 3
COVERAGE: dict[tuple[str, str, str], dict[str, str | int]] = {}

REGISTRY = build_registry(make_plugin_manager(strict=False, warn=lambda line: None)[0])
TOPOLOGY_OPTIONS = {"single": {}, "stacked": {"num_layers": 2}, "bidirectional": {"num_layers": 2}}
RULES = ("zeros", "learnable")
COMBINATIONS = [(c, t, r) for c in REGISTRY.names("cell") for t in REGISTRY.names("topology") for r in RULES]


class _Spec:
    """Just enough of a resolved pipeline for graph metadata."""

    def __init__(self, cell: str, topology: str, options: dict, rule: str):
        from types import SimpleNamespace

        from pydantic import BaseModel

        class _Opts(BaseModel):
            pass

        self.config = SimpleNamespace(
            task=SimpleNamespace(name="classify"),
            model=SimpleNamespace(cell=cell, topology=topology, initial_state=rule),
        )
        self.cell_options = _Opts()
        self.topology_options = _Opts()


def _task() -> ClassifyTask:
    from seqpipe.builtin.encodings import Characters, CharactersOptions

    task = ClassifyTask.__new__(ClassifyTask)
    task.labels = [f"l{i}" for i in range(LABELS)]
    task.encoding = Characters(CharactersOptions(min_count=1, max_length=100))
    task.encoding.fit(["abcdefghijklmnopqrstu"])
    return task


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


def no_sequence_graph(topo_cls) -> str | None:
    """Why `seqpipe run` writes no sequence graph for a topology class (None: it writes one), by the
    engine's rule (seqpipe/assembly.py ``_graphs``, seqpipe/onnx/export.py ``export_sequence``): a
    topology that declares its layers has one (native operators, or Loops over each cell), and so
    has any causal topology (an ONNX Loop around its step graph)."""
    if declares_layers(topo_cls) or topo_cls.causal:
        return None
    return "n/a: not causal, declares no layers"


@cache
def _exported(root: Path, cell: str, topology: str, rule: str):
    """(model, step runner | None, sequence runner | None) of one combination, exported on first use:
    a plugin that fails to build fails its own rows, and `-k` builds only what it selects.

    Learnable initial states get random non-zero values, so the metadata round trip (step graph)
    and the built-in initial state (sequence graph) are both exercised."""
    return built_into(COVERAGE.setdefault((cell, topology, rule), {}), _export, root, cell, topology, rule)


def built_into(row: dict, build, *args):
    """``build(*args, row)``; a failure marks the coverage row as failed to build before it propagates."""
    try:
        return build(*args, row)
    except Exception as exc:
        row["step"] = row["sequence"] = f"FAILED to build: {type(exc).__name__}"
        raise


def plugin_classes(cell: str, topology: str) -> tuple[type, type, dict]:
    """The registered cell and topology classes, and the matrix's options for that topology."""
    cell_cls = REGISTRY.get("cell", cell, "matrix").obj
    topo_cls = REGISTRY.get("topology", topology, "matrix").obj
    return (
        cell_cls,
        topo_cls,
        {k: v for k, v in TOPOLOGY_OPTIONS.get(topology, {}).items() if k in topo_cls.Options.model_fields},
    )


def _export(root: Path, cell: str, topology: str, rule: str, row: dict):
    cell_cls, topo_cls, options = plugin_classes(cell, topology)
    torch.manual_seed(0)
    model = ClassifierModel(
        token_embedding(VOCAB, EMBED),
        topo_cls(cell_cls, EMBED, HIDDEN, dict(cell_cls.example_options), **options),
        LABELS,
        initial_state=rule,
    ).eval()
    if rule == "learnable":
        for value in model.initial.values.values():
            torch.nn.init.normal_(value, std=0.5)
    step, sequence = export_row(
        model, _task(), _Spec(cell, topology, options, rule), topo_cls, root / f"{cell}-{topology}-{rule}", row
    )
    return model, step, sequence


def export_row(model, task, spec_src, topo_cls, stem: Path, row: dict, native_step: bool = True, streams: bool = True):
    """Export the graphs `seqpipe run` writes for this combination to ``<stem>-<kind>.onnx``, record
    each in the coverage ``row`` (or why it is absent), and open them: (step runner | None,
    sequence runner | None). ``streams``: False for a head that has no step-by-step form."""
    from seqpipe.onnx.spec import graph_spec

    absent = {"step": None if topo_cls.causal else "n/a: topology not causal", "sequence": no_sequence_graph(topo_cls)}
    if not streams:
        absent["step"] = "n/a: the head cannot stream"
        absent["sequence"] = None if declares_layers(topo_cls) else "n/a: no layers and no step graph to loop"
    runners = {}
    for kind in ("step", "sequence"):
        if absent[kind]:
            row[kind], runners[kind] = absent[kind], None
            continue
        path = stem.with_name(f"{stem.name}-{kind}.onnx")
        if kind == "step":
            exporter = export_step(model, task.step_example(), path, opset=18, exporter="dynamo", native=native_step)
        else:
            step_path = stem.with_name(f"{stem.name}-step.onnx") if runners.get("step") else None
            exporter = export_sequence(task, model, path, opset=18, step_path=step_path, exporter="dynamo")
            row["sequence_kind"] = _sequence_kind(model)
        write_metadata(path, graph_spec(kind, spec_src, model, task, opset=18, exporter=exporter))
        runners[kind] = (StepRunner if kind == "step" else SequenceRunner)(path, device="cpu")
        row[kind] = 0
    return runners["step"], runners["sequence"]


def _sequence_kind(model) -> str:
    """How the sequence graph is built: native operators, a Loop around the step graph, or Loops over each cell."""
    if native_support(model.body) is None:
        return "native"
    return "step loop" if model.body.causal and model.streams else "cell loops"


batches = st.integers(1, 6).flatmap(
    lambda b: st.tuples(st.lists(st.integers(1, 14), min_size=b, max_size=b), st.integers(0, 2**31 - 1))
)


def _diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("cell,topology,rule", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_parity(matrix_dir, cell, topology, rule):
    model, step, sequence = _exported(matrix_dir, cell, topology, rule)

    @settings(max_examples=12, deadline=None, database=None)
    @given(case=batches)
    def drawn_batches(case):
        _check_case(model, step, sequence, COVERAGE[(cell, topology, rule)], case)

    drawn_batches()


def _check_case(model, step, sequence, row: dict, case) -> None:
    lengths_list, seed = case
    lengths = np.array(lengths_list, dtype=np.int64)
    x = np.random.default_rng(seed).integers(1, VOCAB, size=(len(lengths), int(lengths.max())))
    xt, lt = torch.from_numpy(x), torch.from_numpy(lengths)
    with torch.no_grad():
        y_torch, s_torch = model.sequence_output(xt, lt)
    names = model.state_names
    if step is not None:
        from seqpipe.onnx.parity import torch_step_loop

        with torch.no_grad():
            ys_step, s_step = torch_step_loop(model, xt, lt)
        ys_ort, last, s_ort = step.run_padded(x, lengths)
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        assert _diff(ys_ort[valid], ys_step.numpy()[valid]) <= TOL
        assert _diff(last, y_torch.numpy()) <= TOL
        for n, a, b in zip(names, s_step, s_torch):
            assert _diff(s_ort[n], a.numpy()) <= TOL and _diff(s_ort[n], b.numpy()) <= TOL
        row["step"] += 1
    if sequence is not None:
        y_seq, s_seq = sequence.run(x, lengths)
        assert _diff(y_seq, y_torch.numpy()) <= TOL
        for n, b in zip(names, s_torch):
            assert _diff(s_seq[n], b.numpy()) <= TOL
        # continuing from a given state (the optional state_in.* inputs)
        state_in = tuple(
            torch.from_numpy(np.random.default_rng(seed + 1).normal(0, 0.5, s.shape).astype(np.float32))
            for s in s_torch
        )
        with torch.no_grad():
            y_given, s_given = model.sequence_output(xt, lt, state_in)
        y_ort_given, s_ort_given = sequence.run(x, lengths, {n: g.numpy() for n, g in zip(names, state_in)})
        assert _diff(y_ort_given, y_given.numpy()) <= TOL
        assert all(_diff(s_ort_given[n], b.numpy()) <= TOL for n, b in zip(names, s_given))
        if step is not None:
            assert _diff(y_seq, last) <= TOL and all(_diff(s_seq[n], s_ort[n]) <= TOL for n in names)
        row["sequence"] += 1


def test_matrix_covers_every_builtin():
    assert {("gru", "single", "zeros"), ("lstm", "stacked", "learnable"), ("vanilla", "bidirectional", "zeros")} <= set(
        COMBINATIONS
    )


class _WithoutLayers(Stacked):
    """A plugin topology that computes like its parent but, overriding forward, declares no layers."""

    def forward(self, x, lengths, state=None):
        return super().forward(x, lengths, state)


@pytest.mark.parametrize("causal", [True, False])
def test_sequence_graphs_are_reported_by_the_engines_rule(tmp_path, causal):
    """What the matrices report for a topology without declared layers is what `seqpipe check` resolves."""
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.errors import ConfigError
    from seqpipe.registry import Registry
    from seqpipe.testing import pipeline_tables, pipeline_toml

    topo_cls = type(
        "CausalWithoutLayers" if causal else "FutureReadingWithoutLayers", (_WithoutLayers,), {"causal": causal}
    )
    registry = Registry({kind: dict(entries) for kind, entries in REGISTRY.entries.items()})
    registry.add("topology", "no-layers", topo_cls, "test")
    path = tmp_path / "p.toml"
    path.write_text(
        pipeline_toml(pipeline_tables(ClassifyTask, "classify", cell="gru", topology="no-layers", hidden_size=4))
    )
    try:
        graphs = resolve_pipeline(path, registry).graphs
    except ConfigError:  # nothing exportable: the engine refuses the pipeline
        graphs = []
    assert ("sequence" in graphs) == (no_sequence_graph(topo_cls) is None) == causal
