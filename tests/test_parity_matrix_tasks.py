"""The parity matrix over task shapes: every registered cell × topology, exported the way the tag
task exports it from token ids (the characters, words and subwords encodings; per-step outputs;
generate's step graph has the same shape), from words with their characters (``input.characters``:
a word id and its character ids per step, read by the character CNN) and from number vectors (the numbers encoding:
float
inputs, per-step outputs), the way the forecast task (float inputs, one output after the last
step; classify on numbers has the same graph with a softmax) exports it, and the way classify
exports its pooling heads (mean and max: the step graph carries the running statistics as the
``pool`` state, so streaming ends at the sequence graph's prediction; attention: a sequence graph
only), proven equal on
hypothesis-drawn ragged batches (lengths from 1) to 1e-5. Cells without a native operator take the
ONNX Loop paths, so their per-step scan outputs are covered too. Each combination is exported on
first use (cells with their ``example_options``), so a broken plugin fails its own rows only; a
topology's sequence graph is reported the way `seqpipe run` writes it. Step graphs here are traced by torch.onnx
(``native_step = false``); the classify and registry matrices check the native ones. (classify's
shape is tests/test_parity_matrix.py.)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqpipe.builtin.classify.task import ClassifierModel
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel, token_embedding
from seqpipe.onnx.native import sequence_graph
from seqpipe.onnx.parity import torch_step_loop
from seqpipe.word_characters import WordCharacters
from test_parity_matrix import REGISTRY, _Spec, built_into, export_row, plugin_classes

TOL = 1e-5
VOCAB, EMBED, HIDDEN, LABELS, FEATURES = 19, 6, 9, 4, 2
CHARS, PER_WORD, CHAR_FEATURES = 11, 5, 7  # the character CNN of tag_chars
POOLED = ("classify_mean", "classify_max", "classify_attention")  # classify with a pooling head
SHAPES = ("tag", "tag_chars", "tag_numbers", "forecast", *POOLED)
PER_STEP = ("tag", "tag_chars", "tag_numbers")
TOKEN_IDS = ("tag", "tag_chars", *POOLED)
COMBINATIONS = [(s, c, t) for s in SHAPES for c in REGISTRY.names("cell") for t in REGISTRY.names("topology")]
TASK_COVERAGE: dict[tuple[str, str, str], dict[str, str | int]] = {}


class _ShapeTask:
    """The parts of a task that export and metadata read."""

    def __init__(self, shape: str):
        self.shape = shape
        self.sequence_y = "per_step" if shape in PER_STEP else "final"

    def encoding_spec(self):
        labels = {"labels": [f"t{i}" for i in range(LABELS)]}
        if self.shape == "tag_chars":
            return {"input": {"dtype": "int64", "kind": "words", "features": 1 + PER_WORD}, "output": labels}
        if self.shape in TOKEN_IDS:
            return {"input": {"dtype": "int64", "kind": "words"}, "output": labels}
        if self.shape == "tag_numbers":
            return {"input": {"dtype": "float32", "kind": "numbers", "features": FEATURES}, "output": labels}
        return {"input": {"dtype": "float32", "features": FEATURES}, "output": {"size": FEATURES}}

    def step_example(self):
        if self.shape == "tag_chars":
            return torch.ones(2, 1 + PER_WORD, dtype=torch.int64)
        return torch.ones(2, dtype=torch.int64) if self.shape in TOKEN_IDS else torch.zeros(2, FEATURES)

    def sequence_graph(self, model, opset):
        return sequence_graph(model, opset, FEATURES if self.shape == "forecast" else LABELS, f"matrix_{self.shape}")


def _model(shape: str, cell_cls, topo_cls, options) -> SequenceModel:
    torch.manual_seed(0)
    size = EMBED + CHAR_FEATURES if shape == "tag_chars" else EMBED if shape in TOKEN_IDS else FEATURES
    topology = topo_cls(cell_cls, size, HIDDEN, dict(cell_cls.example_options), **options)
    if shape in POOLED:
        return ClassifierModel(
            token_embedding(VOCAB, EMBED), topology, LABELS, pooling=shape.removeprefix("classify_")
        ).eval()
    initial = InitialState("zeros", topology.state_shapes)
    if shape in PER_STEP:
        embed = token_embedding(VOCAB, EMBED) if shape == "tag" else nn.Identity()
        if shape == "tag_chars":
            embed = WordCharacters(VOCAB, EMBED, CHARS, PER_WORD, CHAR_FEATURES)
        return SequenceModel(
            embed, topology, nn.Linear(topology.output_size, LABELS), initial, output="softmax", per_step=True
        ).eval()
    return SequenceModel(
        nn.Identity(), topology, nn.Linear(topology.output_size, FEATURES), initial, output="identity"
    ).eval()


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix-tasks")


@cache
def _exported(root: Path, shape: str, cell: str, topology: str):
    """(model, step runner | None, sequence runner | None) of one combination, exported on first use
    (a plugin that fails to build fails its own rows; `-k` builds only what it selects)."""
    return built_into(TASK_COVERAGE.setdefault((shape, cell, topology), {}), _export, root, shape, cell, topology)


def _export(root: Path, shape: str, cell: str, topology: str, row: dict):
    cell_cls, topo_cls, options = plugin_classes(cell, topology)
    model, task = _model(shape, cell_cls, topo_cls, options), _ShapeTask(shape)
    spec_src = _Spec(cell, topology, options, "zeros")
    spec_src.config.task.name = shape
    # step graphs traced here (the classify and registry matrices check the native ones)
    step, sequence = export_row(
        model,
        task,
        spec_src,
        topo_cls,
        root / f"{shape}-{cell}-{topology}",
        row,
        native_step=False,
        streams=shape != "classify_attention",
    )
    return model, step, sequence


batches = st.integers(1, 5).flatmap(
    lambda b: st.tuples(st.lists(st.integers(1, 12), min_size=b, max_size=b), st.integers(0, 2**31 - 1))
)


def _diff(a, b, mask=None) -> float:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float((d[mask] if mask is not None else d).max(initial=0.0))


@pytest.mark.parametrize("shape,cell,topology", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_task_shape_parity(matrix_dir, shape, cell, topology):
    model, step, sequence = _exported(matrix_dir, shape, cell, topology)

    @settings(max_examples=8, deadline=None, database=None)
    @given(case=batches)
    def drawn_batches(case):
        _check_case(model, step, sequence, shape, TASK_COVERAGE[(shape, cell, topology)], case)

    drawn_batches()


def _check_case(model, step, sequence, shape: str, row: dict, case) -> None:
    lengths_list, seed = case
    lengths = np.array(lengths_list, dtype=np.int64)
    rng = np.random.default_rng(seed)
    T = int(lengths.max())
    x = (
        rng.integers(1, VOCAB, size=(len(lengths), T))
        if shape in TOKEN_IDS
        else rng.normal(size=(len(lengths), T, FEATURES)).astype(np.float32)
    )
    if shape == "tag_chars":  # each word's characters: 1 to PER_WORD ids, then 0-padding slots
        chars = rng.integers(1, CHARS, size=(len(lengths), T, PER_WORD))
        spelled = rng.integers(1, PER_WORD + 1, size=(len(lengths), T, 1))
        x = np.concatenate([x[..., None], np.where(np.arange(PER_WORD) < spelled, chars, 0)], axis=-1)
    xt, lt = torch.from_numpy(x), torch.from_numpy(lengths)
    valid = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
    with torch.no_grad():
        y_torch, s_torch = model.sequence_output(xt, lt)  # tag, tag_numbers: [B, T, C]; forecast: [B, F]
    names = model.state_names
    if step is not None:
        with torch.no_grad():
            ys_step, s_step = torch_step_loop(model, xt, lt)
        ys_ort, last, s_ort = step.run_padded(x, lengths)
        assert _diff(ys_ort, ys_step.numpy(), valid) <= TOL
        per_step = shape in PER_STEP
        assert _diff(ys_ort if per_step else last, y_torch.numpy(), valid if per_step else None) <= TOL
        assert all(_diff(s_ort[n], a.numpy()) <= TOL for n, a in zip(names, s_torch))
        row["step"] += 1
    if sequence is not None:
        y_seq, s_seq = sequence.run(x, lengths)
        assert y_seq.shape == tuple(y_torch.shape)
        assert _diff(y_seq, y_torch.numpy(), valid if shape in PER_STEP else None) <= TOL
        assert all(_diff(s_seq[n], b.numpy()) <= TOL for n, b in zip(names, s_torch))
        if shape in PER_STEP:  # a sequence alone equals it padded in the batch
            shortest = int(np.argmin(lengths))
            alone, _ = sequence.run(x[shortest : shortest + 1, : lengths[shortest]], lengths[shortest : shortest + 1])
            assert _diff(alone[0], y_seq[shortest, : lengths[shortest]]) <= TOL
        row["sequence"] += 1
