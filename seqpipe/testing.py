"""Test helpers for plugin authors, also loaded as a pytest plugin (``pytest11`` entry point).

    from seqpipe.testing import check_cell

    def test_my_cell_honours_the_contract():
        check_cell(MyCell)

Fixture ``seqpipe_registry``: a registry built by a fresh plugin manager, holding the built-ins
and every installed plugin (your own, once it is installed). Module import stays light (no torch)
because pytest loads it in every session of an environment where seqpipe is installed.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def seqpipe_registry():
    from seqpipe.plugins import make_plugin_manager
    from seqpipe.registry import build_registry

    pm, _ = make_plugin_manager(strict=True)
    return build_registry(pm)


def check_cell(cell_cls: type, *, input_size: int = 3, hidden_size: int = 5, options: dict[str, Any] | None = None,
               atol: float = 1e-5, seed: int = 0) -> None:
    """Assert that ``cell_cls`` follows the cell contract of :class:`seqpipe.contracts.Cell`:

    - it declares ``state_names`` and its ``Options`` accept ``options``;
    - one call maps ``(x_t [B, I], state)`` to a state of the same shapes;
    - ``forward_sequence`` (fused or not) equals the masked step loop on a ragged batch, outputs
      are zero past each length, and a sequence alone equals the same sequence padded in a batch;
    - it exports to ONNX as one step (stacked twice, the way seqpipe exports it) and onnxruntime agrees.
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort
    import torch

    from seqpipe.builtin.topologies import Stacked
    from seqpipe.contracts import masked_step_loop
    from seqpipe.onnx.export import StepGraph, export_step, step_io_names

    name = cell_cls.__name__
    assert isinstance(cell_cls.state_names, tuple) and cell_cls.state_names, f"{name}.state_names must be a non-empty tuple"
    options = cell_cls.Options.model_validate(options or {}).model_dump()
    torch.manual_seed(seed)
    cell = cell_cls(input_size, hidden_size, **options).eval()
    batch, lengths = 4, torch.tensor([6, 1, 4, 6])
    x = torch.randn(batch, 6, input_size)
    state = tuple(torch.randn(batch, hidden_size) * 0.5 for _ in cell_cls.state_names)
    with torch.no_grad():
        new = cell(x[:, 0], state)
        assert isinstance(new, tuple) and len(new) == len(state), f"{name}.forward must return one tensor per state name"
        assert all(n.shape == s.shape for n, s in zip(new, state)), f"{name}.forward changed a state's shape"
        out, final = cell.forward_sequence(x, lengths, state)
        ref_out, ref_final = masked_step_loop(cell, x, lengths, state)
        assert out.shape == (batch, 6, hidden_size), f"{name}.forward_sequence outputs must be [B, T, H]"
        assert torch.allclose(out, ref_out, atol=atol), f"{name}.forward_sequence disagrees with its step loop"
        assert all(torch.allclose(a, b, atol=atol) for a, b in zip(final, ref_final)), f"{name}: final state disagrees with the step loop"
        assert not out[1, 1:].any(), f"{name}.forward_sequence must give zeros past a sequence's length"
        alone, alone_final = cell.forward_sequence(x[1:2, :1], lengths[1:2], tuple(s[1:2] for s in state))
        assert torch.allclose(alone[0, 0], out[1, 0], atol=atol), f"{name}: padding changed a result"
    # export one step through two stacked layers, as seqpipe does, and compare with onnxruntime
    topology = Stacked(cell_cls, input_size, hidden_size, options, num_layers=2).eval()

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = topology
            self.state_names = topology.state_names

        def initial_state(self, b):
            return topology.zero_state(b)

        def step(self, x_t, s):
            return topology.step(x_t, s)

    model = _Model()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        export_step(model, torch.randn(2, input_size), path, opset=18, exporter="dynamo")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, _ = step_io_names(topology.state_names)
    x_t = torch.randn(3, input_size)
    s = tuple(torch.randn(3, 2, hidden_size) * 0.5 for _ in topology.state_names)
    with torch.no_grad():
        expected = StepGraph(model)(x_t, *s)
    got = session.run(None, dict(zip(inputs, [x_t.numpy(), *(t.numpy() for t in s)])))
    worst = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    assert worst <= atol, f"{name}: onnxruntime differs from torch by {worst:.2e} on one exported step"
