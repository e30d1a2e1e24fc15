"""The cell and topology contracts, for every registered cell × causal topology.

Hypothesis draws batch sizes, ragged lengths (length 1 included) and sizes; the checks are
the contract: the fused sequence path equals the step loop, and padding never changes a result.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqpipe.contracts import masked_step_loop

TOL = 1e-5


def _topologies(registry):
    for cell in registry.names("cell"):
        for topology in registry.names("topology"):
            yield cell, topology


def build(registry, cell: str, topology: str, input_size: int, hidden: int, layers: int):
    cell_cls = registry.get("cell", cell, "test").obj
    topo_cls = registry.get("topology", topology, "test").obj
    options = {"num_layers": layers} if "num_layers" in topo_cls.Options.model_fields else {}
    torch.manual_seed(0)
    return topo_cls(cell_cls, input_size, hidden, {}, **options).eval()


CELLS_TOPOLOGIES = [(c, t) for t in ("single", "stacked", "bidirectional") for c in ("vanilla", "gru", "lstm")]

shapes = st.fixed_dictionaries(
    {
        "lengths": st.lists(st.integers(1, 12), min_size=1, max_size=6),
        "input_size": st.integers(1, 7),
        "hidden": st.integers(1, 9),
        "layers": st.integers(1, 3),
        "seed": st.integers(0, 2**16),
    }
)


def test_every_builtin_pair_is_registered(registry):
    assert set(CELLS_TOPOLOGIES) <= set(_topologies(registry))


@pytest.mark.parametrize("cell,topology", CELLS_TOPOLOGIES)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # registry is read-only
@given(case=shapes)
def test_sequence_path_equals_step_loop_and_ignores_padding(registry, cell, topology, case):
    lengths = torch.tensor(case["lengths"])
    net = build(registry, cell, topology, case["input_size"], case["hidden"], case["layers"])
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(len(lengths), int(lengths.max()) + 2, case["input_size"], generator=g)  # 2 extra padded steps
    with torch.no_grad():
        out, final = net(x, lengths, net.zero_state(len(lengths)))
        # step path (causal topologies): the topology's own one-step function, frozen past each length
        state = final if not net.causal else net.zero_state(len(lengths))
        for t in range(x.shape[1] if net.causal else 0):
            y, new = net.step(x[:, t], state)
            alive = (t < lengths).view(-1, 1, 1)
            state = tuple(torch.where(alive, n, o) for n, o in zip(new, state))
            valid = t < lengths
            assert torch.allclose(y[valid], out[valid, t], atol=TOL), f"step {t} output differs"
        for a, b in zip(state, final):
            assert torch.allclose(a, b, atol=TOL)
        # padding invariance: each sequence alone, unpadded, gives the same outputs and final state
        for i, n in enumerate(lengths.tolist()):
            alone, alone_final = net(x[i : i + 1, :n], lengths[i : i + 1], net.zero_state(1))
            assert torch.allclose(alone[0], out[i, :n], atol=TOL)
            for a, b in zip(alone_final, final):
                assert torch.allclose(a[0], b[i], atol=TOL)
            assert torch.all(out[i, n:] == 0), "outputs past a sequence's length must be zero"


@pytest.mark.parametrize("cell", ["vanilla", "gru", "lstm"])
def test_fused_cell_path_equals_generic_masked_loop(registry, cell):
    cls = registry.get("cell", cell, "test").obj
    torch.manual_seed(1)
    c = cls(5, 7).eval()
    x, lengths = torch.randn(4, 9, 5), torch.tensor([9, 1, 4, 6])
    state = tuple(torch.randn(4, 7) for _ in cls.state_names)
    with torch.no_grad():
        fused_out, fused_final = c.forward_sequence(x, lengths, state)
        loop_out, loop_final = masked_step_loop(c, x, lengths, state)
    assert torch.allclose(fused_out, loop_out, atol=TOL)
    for a, b in zip(fused_final, loop_final):
        assert torch.allclose(a, b, atol=TOL)


def test_vanilla_cell_is_the_seed_recurrence(registry):
    """h_t = tanh(W_xh x_t + b_xh + W_hh h_{t-1} + b_hh), as in the seed's VanillaRNNCell."""
    cls = registry.get("cell", "vanilla", "test").obj
    c = cls(3, 4)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    f = c.fused
    expected = torch.tanh(x @ f.weight_ih_l0.T + f.bias_ih_l0 + h @ f.weight_hh_l0.T + f.bias_hh_l0)
    assert torch.allclose(c(x, (h,))[0], expected, atol=1e-6)


def test_lstm_declares_two_states_and_output_is_first(registry):
    cls = registry.get("cell", "lstm", "test").obj
    assert cls.state_names == ("h", "c")
    c = cls(3, 4)
    h, cstate = c(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))
    assert h.shape == cstate.shape == (2, 4)


def test_bidirectional_refuses_to_step_and_summarises_both_directions(registry):
    from seqpipe.errors import ExportError

    net = build(registry, "gru", "bidirectional", 3, 4, 2)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    with pytest.raises(ExportError, match="not causal"):
        net.step(x[:, 0], net.zero_state(2))
    with torch.no_grad():
        out, state = net(x, lengths)
        summary = net.final_output(out, lengths, state)
    assert out.shape == (2, 5, 8) and state[0].shape == (2, 4, 4)
    assert torch.allclose(summary[1, :4], out[1, 1, :4]) and torch.allclose(summary[1, 4:], out[1, 0, 4:])


def test_stacked_dropout_is_between_layers_only_in_training(registry):
    net = registry.get("topology", "stacked", "test").obj(
        registry.get("cell", "gru", "test").obj, 3, 5, {}, num_layers=2, dropout=0.5
    )
    x, lengths = torch.randn(2, 4, 3), torch.tensor([4, 2])
    net.eval()
    a, _ = net(x, lengths)
    b, _ = net(x, lengths)
    assert torch.equal(a, b)
    net.train()
    torch.manual_seed(0)
    c, _ = net(x, lengths)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("cell,op_type", [("vanilla", "RNN"), ("gru", "GRU"), ("lstm", "LSTM")])
def test_native_and_traced_step_graphs_agree(registry, tmp_path, cell, op_type):
    """Built-in cells' step graph is written from the native ONNX operator run for one step; the
    traced graph (``native_step = false``) and torch give the same answers, step after step."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from seqpipe.builtin.classify.task import ClassifierModel
    from seqpipe.models import token_embedding
    from seqpipe.onnx.export import export_step
    from seqpipe.onnx.parity import torch_step_loop

    topology = build(registry, cell, "stacked", 5, 7, 2)
    torch.manual_seed(1)
    model = ClassifierModel(token_embedding(13, 5), topology, 3, initial_state="learnable").eval()
    for value in model.initial.values.values():
        torch.nn.init.normal_(value, std=0.5)
    sessions = {}
    for kind, native in (("native", True), ("traced", False)):
        path = tmp_path / f"{kind}.onnx"
        described = export_step(
            model, torch.ones(2, dtype=torch.int64), path, opset=18, exporter="dynamo", native=native
        )
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert (op_type in ops) == native and ("native" in described) == native
        if native and cell == "gru":  # torch's GRU applies the reset gate after the hidden matmul
            gru = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "GRU")
            assert (
                onnx.helper.get_attribute_value(next(a for a in gru.attribute if a.name == "linear_before_reset")) == 1
            )
        sessions[kind] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.random.default_rng(0).integers(1, 13, size=(4, 9)))
    lengths = torch.full((4,), 9)
    ys, _ = torch_step_loop(model, x, lengths)
    for kind, session in sessions.items():
        state = [s.detach().numpy() for s in model.initial_state(4)]
        for t in range(9):
            y, *state = session.run(
                None, {"x": x[:, t].numpy(), **{f"state_in.{n}": s for n, s in zip(model.state_names, state)}}
            )
            assert np.abs(y - ys[:, t].numpy()).max() <= TOL, (kind, t)


def test_reusing_torch_onnx_table_writes_the_same_file_as_torch_alone(tmp_path):
    """export_module builds torch.onnx's ATen-to-ONNX table once per process (a speed-up): the files
    it writes are byte for byte what torch.onnx writes on its own, and torch's own builder is put back."""
    from torch.onnx._internal.exporter import _registration

    from seqpipe.builtin.cells import ProjectedLSTMCell
    from seqpipe.onnx.torch_export import export_module

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = ProjectedLSTMCell(3, 6, proj_size=4)

        def forward(self, x, h, c):
            return self.cell(x, (h, c))

    torch.manual_seed(0)
    module, batch = Step().eval(), torch.export.Dim("batch")
    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 6))
    shapes, names = ({0: batch},) * 3, dict(input_names=["x", "h", "c"], output_names=["h_out", "c_out"])
    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    for name in ("first.onnx", "second.onnx"):
        export_module(module, args, tmp_path / name, dynamic_shapes=shapes, opset=18, exporter="dynamo", **names)
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is original
    torch.onnx.export(module, args, dynamo=True, opset_version=18, dynamic_shapes=shapes, **names).save(
        str(tmp_path / "torch.onnx")
    )
    expected = (tmp_path / "torch.onnx").read_bytes()
    assert (tmp_path / "first.onnx").read_bytes() == expected == (tmp_path / "second.onnx").read_bytes()
