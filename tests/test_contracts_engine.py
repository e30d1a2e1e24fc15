"""The engine learns what it exports from what plugins declare: per-state sizes end to end (a
projected LSTM), declarations that stop holding in a subclass, option validators that see the
model's sizes, and plugin code that fails while building named in one line before a run directory
exists."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from conftest import _write_pipeline
from seqpipe.builtin.cells import LSTMCell, ProjectedLSTMCell
from seqpipe.cli import main
from seqpipe.contracts import Cell, native_operator
from seqpipe.errors import PluginError
from seqpipe.run import run_pipeline
from seqpipe.serving.runtime import StepRunner, Stream

PROJ, HIDDEN = 5, 12


def _input_shapes(path) -> dict[str, list]:
    graph = onnx.load(str(path)).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


@pytest.mark.slow
def test_projected_lstm_pipeline_passes_parity_and_serves_its_narrow_state(tmp_path, small_csv, registry):
    pipeline = _write_pipeline(
        tmp_path / "p.toml",
        small_csv,
        cell="projected_lstm",
        topology="stacked",
        hidden=HIDDEN,
        topology_options=f"[model.cell_options]\nproj_size = {PROJ}",
    )
    result = run_pipeline(pipeline, registry, str(tmp_path / "run"), log=lambda line: None)
    assert result.parity["passed"] and result.parity["max_scaled_diff"] <= 1e-5
    assert set(result.parity["graphs"]) == {"step", "sequence"}
    for graph in ("step", "sequence"):
        shapes = _input_shapes(result.run_dir / "onnx" / f"{graph}.onnx")
        assert shapes["state_in.h"][1:] == [2, PROJ] and shapes["state_in.c"][1:] == [2, HIDDEN]
    runner = StepRunner(result.run_dir / "onnx" / "step.onnx", device="cpu")
    assert runner.state_shapes == {"h": (2, PROJ), "c": (2, HIDDEN)}
    # streaming keeps each state at its own size, and matches the padded loop
    ids = np.array([[5, 7, 9], [3, 4, 2]], np.int64)
    stream = Stream(runner, batch=2)
    ys = [stream.step(ids[:, t]).copy() for t in range(3)]
    _, last, state = runner.run_padded(ids, np.array([3, 3]))
    assert np.allclose(ys[-1], last, atol=1e-6)
    assert stream.state()["h"].shape == (2, 2, PROJ) and np.allclose(stream.state()["c"], state["c"], atol=1e-6)


def test_projected_lstm_steps_like_torch_nn_lstm():
    torch.manual_seed(0)
    cell = ProjectedLSTMCell(4, HIDDEN, proj_size=PROJ).eval()
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    state = (torch.randn(3, PROJ) * 0.3, torch.randn(3, HIDDEN) * 0.3)
    with torch.no_grad():
        fused, (h, c) = cell.forward_sequence(x, lengths, state)
        stepped = tuple(s[:1] for s in state)  # row 0 runs all 6 steps
        for t in range(6):
            stepped = cell(x[:1, t], stepped)
    assert fused.shape == (3, 6, PROJ) and h.shape == (3, PROJ) and c.shape == (3, HIDDEN)
    assert torch.allclose(stepped[0], h[:1], atol=1e-5) and torch.allclose(stepped[1], c[:1], atol=1e-5)


def test_check_refuses_a_projection_not_smaller_than_hidden(tmp_path, small_csv):
    pipeline = _write_pipeline(
        tmp_path / "p.toml",
        small_csv,
        cell="projected_lstm",
        hidden=8,
        topology_options="[model.cell_options]\nproj_size = 8",
    )
    result = CliRunner().invoke(main, ["check", str(pipeline)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert (
        "\n" not in message
        and "model.cell_options" in message
        and "proj_size 8 must be smaller than model.hidden_size 8" in message
    )


def test_a_subclass_that_changes_the_step_loses_its_parents_native_operator():
    class PeepholeLSTM(LSTMCell):
        def forward(self, x_t, state):
            h, c = super().forward(x_t, state)
            return h, 0.5 * c

    class RenamedLSTM(LSTMCell):  # same computation: the declaration still holds
        pass

    assert native_operator(LSTMCell(3, 4)).op_type == "LSTM"
    assert native_operator(RenamedLSTM(3, 4)).op_type == "LSTM"
    assert native_operator(PeepholeLSTM(3, 4)) is None


class _BrokenCell(Cell):
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        raise RuntimeError("needs a kernel this machine lacks")

    def forward(self, x_t, state):  # pragma: no cover - never built
        return state


def test_plugin_code_failing_while_building_is_one_line_before_any_run_directory(tmp_path, small_csv, registry):
    registry.add("cell", "broken", _BrokenCell, "seqpipe_broken", "seqpipe-broken")
    pipeline = _write_pipeline(tmp_path / "p.toml", small_csv, cell="broken")
    out = tmp_path / "run"
    with pytest.raises(PluginError) as failure:
        run_pipeline(pipeline, registry, str(out), log=lambda line: None)
    message = str(failure.value)
    assert "\n" not in message
    assert "cell 'broken'" in message and "seqpipe-broken" in message and "building the model" in message
    assert "needs a kernel this machine lacks" in message
    assert not out.exists()
