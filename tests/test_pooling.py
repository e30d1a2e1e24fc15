"""Pooling heads (classify's ``pooling``): the running statistics make mean and max stream, so a
sequence cut anywhere and continued from the ``pool`` state ends where the whole one does; attention
has a sequence graph only, which `seqpipe check` says before training. (The exported graphs'
parity is in tests/test_parity_matrix_tasks.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.cli import main
from seqpipe.pooling import Pooling

SIZE = 5


def drawn(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs [B, T, SIZE] with garbage past each length (a pooling must not read it), and the lengths."""
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(len(lengths), max(lengths), SIZE, generator=generator)
    lengths_t = torch.tensor(lengths)
    outputs[torch.arange(max(lengths))[None, :] >= lengths_t[:, None]] = 1e6
    return outputs, lengths_t


cases = st.tuples(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(case=cases, kind=st.sampled_from(["mean", "max"]))
def test_stepping_and_the_running_form_end_where_the_whole_sequence_does(case, kind):
    lengths, seed = case
    outputs, lengths_t = drawn(lengths, seed)
    pooling = Pooling(kind, SIZE)
    whole, state = pooling.whole(outputs, lengths_t, None)
    expected = [outputs[b, :n].mean(0) if kind == "mean" else outputs[b, :n].amax(0) for b, n in enumerate(lengths)]
    assert torch.allclose(whole, torch.stack(expected), atol=1e-5)
    assert torch.equal(state[:, 1, 0], lengths_t.float())
    running = pooling.running(outputs, None)
    for b, n in enumerate(lengths):
        assert torch.allclose(running[b, n - 1], whole[b], atol=1e-5)
        pool = torch.zeros(1, 2, SIZE)
        for t in range(n):
            stepped, pool = pooling.step(outputs[b : b + 1, t], pool)
            assert torch.allclose(stepped[0], running[b, t], atol=1e-5)
        assert torch.allclose(pool[0], state[b], atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(case=cases, cut=st.integers(1, 8), kind=st.sampled_from(["mean", "max"]))
def test_a_sequence_continued_from_its_pool_state_ends_as_if_never_cut(case, cut, kind):
    lengths, seed = case
    outputs, _ = drawn(lengths, seed)
    full = torch.tensor(lengths)
    head = torch.clamp(full, max=cut)
    rows = full > head  # sequences the cut splits in two
    if not rows.any():
        return
    pooling = Pooling(kind, SIZE)
    _, first = pooling.whole(outputs[rows], head[rows], None)
    rest = torch.full_like(outputs[rows], 1e6)  # each split row's remaining steps first, then padding
    for row, b in enumerate(rows.nonzero()[:, 0].tolist()):
        rest[row, : lengths[b] - int(head[b])] = outputs[b, int(head[b]) : lengths[b]]
    continued, state = pooling.whole(rest, full[rows] - head[rows], first)
    whole, whole_state = pooling.whole(outputs[rows], full[rows], None)
    assert torch.allclose(continued, whole, atol=1e-5) and torch.allclose(state, whole_state, atol=1e-4)


def test_attention_weighs_only_valid_steps_and_has_no_running_form():
    outputs, lengths = drawn([3, 1, 4], 0)
    pooling = Pooling("attention", SIZE)
    pooled, state = pooling.whole(outputs, lengths, None)
    assert state is None and pooled.abs().max() < 100  # the 1e6 padding got no weight
    assert torch.allclose(pooled[1], outputs[1, 0], atol=1e-6)  # one step: all the weight
    with pytest.raises(ValueError, match="no step-by-step form"):
        pooling.running(outputs, None)


def test_attention_pooling_exports_the_sequence_graph_only_and_check_refuses_a_step_graph(
    tmp_path, small_csv, write_pipeline
):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv)
    text = pipeline.read_text().replace("[task.options]\n", '[task.options]\npooling = "attention"\n')
    assert 'pooling = "attention"' in text
    pipeline.write_text(text.replace("[export]\n", '[export]\ngraphs = ["step", "sequence"]\n'), encoding="utf-8")
    refused = CliRunner().invoke(main, ["check", str(pipeline)])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "export.graphs: no 'step' graph: task.options.pooling = \"attention\"" in refused.output

    pipeline.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(run)])
    assert result.exit_code == 0, result.output
    parity = json.loads((run / "parity.json").read_text())
    assert parity["passed"] and list(parity["graphs"]) == ["sequence"]
    assert not (run / "onnx" / "step.onnx").exists() and (run / "onnx" / "sequence.onnx").is_file()


@pytest.mark.parametrize("pooling,opset", [("mean", 18), ("max", 17)])
def test_a_pooled_run_streams_through_the_native_step_graph(tmp_path, small_csv, write_pipeline, pooling, opset):
    """The default export path for built-in cells: the step graph written from native operators with
    the pooling's nodes, checked against torch; opset 17 takes ReduceMax's axes as an attribute."""
    import onnx

    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, epochs=2)
    text = pipeline.read_text().replace("[task.options]\n", f'[task.options]\npooling = "{pooling}"\n')
    pipeline.write_text(text.replace("[export]\n", f"[export]\nopset = {opset}\n"), encoding="utf-8")
    assert f'pooling = "{pooling}"' in pipeline.read_text() and f"opset = {opset}" in pipeline.read_text()
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(run)])
    assert result.exit_code == 0, result.output
    parity = json.loads((run / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}
    step = onnx.load(str(run / "onnx" / "step.onnx"))
    spec = json.loads({p.key: p.value for p in step.metadata_props}["seqpipe.spec"])
    assert "native" in spec["exporter"] and [s["name"] for s in spec["states"]][-1] == "pool"
    assert any(node.name.startswith("pool_") for node in step.graph.node)


@pytest.mark.parametrize("topology", ["single", "bidirectional"])
def test_fp16_copies_of_a_mean_pooled_classifier_are_valid_and_count_steps_in_fp32(
    tmp_path, small_csv, write_pipeline, topology
):
    """The fp16 converter once wrote an invalid sequence graph here (the broadcast pool state, read by
    two fp32 nodes, got two casts under one name), and sent the pool state through fp16 on its way
    from state_in.pool to the pooling's fp32 nodes, where a step count stops growing at 2048."""
    import onnx

    from seqpipe.serving.runtime import StepRunner

    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, topology=topology, extra="fp16 = true")
    pipeline.write_text(
        pipeline.read_text().replace("[task.options]\n", '[task.options]\npooling = "mean"\n'), encoding="utf-8"
    )
    assert 'pooling = "mean"' in pipeline.read_text()
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(run)])
    assert result.exit_code == 0, result.output
    parity = json.loads((run / "parity.json").read_text())
    graphs = {"sequence"} if topology == "bidirectional" else {"step", "sequence"}
    assert parity["passed"] and set(parity["graphs"]) == graphs | {f"{g}.fp16" for g in graphs}
    for graph in graphs:
        half = onnx.load(str(run / "onnx" / f"{graph}.fp16.onnx"))
        onnx.checker.check_model(half, full_check=True)
        to_half = {
            n.output[0] for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16
        }
        back = [
            n.name
            for n in half.graph.node
            if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT and n.input[0] in to_half
        ]
        assert not back, back  # no value goes fp32 -> fp16 -> fp32
    if topology == "single":
        runner = StepRunner(run / "onnx" / "step.fp16.onnx", device="cpu")
        state = runner.initial_state(1)
        state["pool"][0, 1] = 5000.0  # 5,000 steps already pooled
        _, new = runner.step(np.ones(1, dtype=np.int64) * 2, state)
        assert np.all(new["pool"][0, 1] == 5001.0)  # fp16 would round 5001 to 5000
