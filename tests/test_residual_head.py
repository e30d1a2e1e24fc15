"""The residual head (``y_t = x_t + head(h_t)``, the forecaster's change from the row read) in torch
and in the native step and sequence graphs, last-step and per-step, on drawn ragged batches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqpipe.builtin.cells import GRUCell
from seqpipe.builtin.topologies import Single
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel
from seqpipe.onnx.native import sequence_graph, step_graph

FEATURES = 3


def _model(per_step: bool) -> SequenceModel:
    torch.manual_seed(0)
    topology = Single(GRUCell, FEATURES, 8, {})
    head = nn.Linear(8, FEATURES)
    return SequenceModel(
        nn.Identity(),
        topology,
        head,
        InitialState("zeros", topology.state_shapes, 0.1),
        output="identity",
        per_step=per_step,
        residual=True,
    ).eval()


def _session(graph: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("per_step", [False, True], ids=["last-step", "per-step"])
@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_graphs_add_the_input_as_torch_does(per_step, lengths, seed):
    model = _model(per_step)
    x = np.random.default_rng(seed).normal(size=(len(lengths), max(lengths), FEATURES)).astype(np.float32) * 5
    lengths_np = np.array(lengths, np.int64)
    with torch.no_grad():
        expected, _ = model.sequence_output(torch.from_numpy(x), torch.from_numpy(lengths_np))
        head_only = model.head(
            model.body(torch.from_numpy(x), torch.from_numpy(lengths_np), model.initial_state(len(lengths)))[0]
        )
    y = _session(sequence_graph(model, 18, FEATURES, "residual"))
    got = y.run(["y"], {"x": x, "lengths": lengths_np})[0]
    if per_step:  # padding steps are not compared
        mask = np.arange(x.shape[1])[None, :] < lengths_np[:, None]
        assert np.abs((got - expected.numpy())[mask]).max() <= 1e-5
        assert np.abs((expected.numpy() - head_only.numpy() - x)[mask]).max() <= 1e-5  # the input itself was added
    else:
        assert np.abs(got - expected.numpy()).max() <= 1e-5
        last = x[np.arange(len(lengths)), lengths_np - 1]
        assert (
            np.abs(expected.numpy() - head_only.numpy()[np.arange(len(lengths)), lengths_np - 1] - last).max() <= 1e-5
        )
    step = _session(step_graph(_model(False), 18, "residual_step"))
    state = np.zeros((len(lengths), 1, 8), np.float32)
    with torch.no_grad():
        torch_y, _ = _model(False).step(torch.from_numpy(x[:, 0]), (torch.from_numpy(state),))
    step_y = step.run(["y"], {"x": x[:, 0], "state_in.h": state})[0]
    assert np.abs(step_y - torch_y.numpy()).max() <= 1e-5


def test_a_residual_head_needs_real_valued_inputs_and_outputs():
    topology = Single(GRUCell, FEATURES, 8, {})
    initial = InitialState("zeros", topology.state_shapes, 0.1)
    with pytest.raises(ValueError, match="residual head"):
        SequenceModel(nn.Identity(), topology, nn.Linear(8, FEATURES), initial, output="softmax", residual=True)
