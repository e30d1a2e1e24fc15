"""seqpipe.testing: the contract checks plugin authors run must pass every registered plugin and
catch broken ones, each with a message naming the class and what broke."""

from __future__ import annotations

import importlib.abc
import sys

import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqpipe.builtin.cells import GRUCell
from seqpipe.builtin.forecast.task import ForecastTask
from seqpipe.builtin.topologies import Stacked
from seqpipe.contracts import Cell, Layers, Topology, declared_layers, declares_layers
from seqpipe.plugins import make_plugin_manager
from seqpipe.registry import build_registry
from seqpipe.testing import check_cell, check_task, check_topology

REGISTRY = build_registry(make_plugin_manager(strict=False, warn=lambda line: None)[0])
CELLS, TOPOLOGIES, TASKS = (REGISTRY.names(kind) for kind in ("cell", "topology", "task"))


def _registered(kind: str, name: str) -> type:
    return REGISTRY.get(kind, name, "test").obj


# -- every registered plugin passes -----------------------------------------------------------------


def test_the_registry_holds_the_builtins_and_the_installed_cell_plugin():
    assert {"vanilla", "gru", "lstm", "projected_lstm", "indrnn"} <= set(CELLS)
    assert {"single", "stacked", "bidirectional"} <= set(TOPOLOGIES)
    assert {"classify", "tag", "generate", "seq2seq", "forecast"} <= set(TASKS)


@pytest.mark.parametrize("name", CELLS)
def test_registered_cell_passes_check_cell(name):
    check_cell(_registered("cell", name))  # built with its example_options (projected_lstm: proj_size 3 < hidden 5)


ragged = st.lists(st.integers(1, 12), min_size=1, max_size=6)


@pytest.mark.parametrize("name", CELLS)
@settings(max_examples=8, deadline=None)
@given(input_size=st.integers(1, 6), hidden_size=st.integers(4, 9), lengths=ragged, seed=st.integers(0, 2**16))
def test_cell_contract_holds_for_drawn_sizes_and_lengths(name, input_size, hidden_size, lengths, seed):
    check_cell(
        _registered("cell", name),
        input_size=input_size,
        hidden_size=hidden_size,
        lengths=lengths,
        seed=seed,
        export=False,
    )


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_registered_topology_passes_check_topology(name):
    check_topology(_registered("topology", name))  # the kit's cell: h narrower than c, no native operator


@pytest.mark.parametrize("name", TOPOLOGIES)
@settings(max_examples=10, deadline=None)
@given(
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 9),
    lengths=ragged,
    layers=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_topology_contract_holds_for_drawn_shapes(name, input_size, hidden_size, lengths, layers, seed):
    # the kit's cell (h narrower than c); every registered cell x topology: tests/test_cells_topologies.py
    topo_cls = _registered("topology", name)
    options = {"num_layers": layers} if "num_layers" in topo_cls.Options.model_fields else {}
    check_topology(
        topo_cls,
        options=options,
        input_size=input_size,
        hidden_size=hidden_size,
        lengths=lengths,
        seed=seed,
        export=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_registered_task_passes_check_task(name, tmp_path):
    seen = check_task(_registered("task", name), registry=REGISTRY, workdir=tmp_path)
    assert seen["graphs"] and all(report["passed"] for report in seen["parity"]["graphs"].values())


class OneLayer(Topology):
    """A plugin's topology, written against the contracts alone: one layer of cells."""

    def __init__(self, cell_cls, input_size, hidden_size, cell_options):
        super().__init__()
        self.cell = cell_cls(input_size, hidden_size, **cell_options)
        self.input_size, self.hidden_size, self.output_size, self.num_slots = (
            input_size,
            hidden_size,
            self.cell.output_size,
            1,
        )
        self.state_names, self.state_sizes = tuple(cell_cls.state_names), tuple(self.cell.state_sizes)

    def forward(self, x, lengths, state=None):
        state = self.zero_state(x.shape[0]) if state is None else state
        out, final = self.cell.forward_sequence(x, lengths, tuple(s[:, 0] for s in state))
        return out, tuple(s.unsqueeze(1) for s in final)

    def step(self, x_t, state):
        new = self.cell(x_t, tuple(s[:, 0] for s in state))
        return new[0], tuple(s.unsqueeze(1) for s in new)

    def layers(self):
        return Layers([(self.cell,)])


class TanhCell(Cell):
    """A plugin's cell, written against the contracts alone."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x_t, state):
        return (torch.tanh(self.linear(torch.cat([x_t, state[0]], dim=1))),)


class RefuseBuiltinImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "seqpipe.builtin" or name.startswith("seqpipe.builtin."):
            raise ImportError(f"{name} imported: the contract checks must not need a built-in plugin")
        return None


def test_the_kit_needs_no_builtin_plugin(monkeypatch):
    """The engine never imports built-in plugins, and the kit checks a plugin the way the engine sees it."""
    import seqpipe

    for module in [m for m in sys.modules if m == "seqpipe.builtin" or m.startswith("seqpipe.builtin.")]:
        monkeypatch.delitem(sys.modules, module)  # restored after the test
    monkeypatch.delattr(seqpipe, "builtin")
    monkeypatch.setattr(sys, "meta_path", [RefuseBuiltinImports(), *sys.meta_path])
    check_cell(TanhCell)
    check_topology(OneLayer)


# -- broken plugins fail, naming what broke ---------------------------------------------------------


class LeakyPaddingCell(Cell):
    """Wrong on purpose: its 'fused' path ignores lengths, so padding changes results."""

    state_names = ("h",)

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)

    def forward(self, x_t, state):
        return (
            torch.tanh(
                x_t @ self.rnn.weight_ih_l0.T
                + self.rnn.bias_ih_l0
                + state[0] @ self.rnn.weight_hh_l0.T
                + self.rnn.bias_hh_l0
            ),
        )

    def forward_sequence(self, x, lengths, state):
        out, h = self.rnn(x, state[0].unsqueeze(0).contiguous())
        return out, (h[0],)


def test_a_cell_that_ignores_lengths_is_caught():
    with pytest.raises(AssertionError, match="LeakyPaddingCell.forward_sequence"):
        check_cell(LeakyPaddingCell, export=False)


class GrowingMemoryCell(Cell):
    """Wrong on purpose: its memory ``c`` doubles in width every step."""

    state_names = ("h", "c")

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size, hidden_size)

    def forward(self, x_t, state):
        h, c = state
        return (torch.tanh(self.linear(x_t) + h), torch.cat([c, c], dim=1))


def test_a_cell_whose_state_changes_shape_is_caught():
    with pytest.raises(AssertionError, match=r"GrowingMemoryCell.forward changed state 'c' from \(3, 5\) to \(3, 10\)"):
        check_cell(GrowingMemoryCell, export=False)


class WideOutputCell(GRUCell):
    """Wrong on purpose: claims an output wider than ``state[0]``, which is what the next layer reads."""

    @property
    def output_size(self):
        return self.hidden_size + 1


def test_a_cell_whose_output_size_is_not_its_first_state_is_caught():
    with pytest.raises(AssertionError, match="WideOutputCell.output_size 6 must be state_sizes"):
        check_cell(WideOutputCell, export=False)


class MisdeclaredGRUCell(GRUCell):
    """Wrong on purpose: declares ONNX's default GRU (reset gate before the hidden matmul), which is
    not torch's formulation, so its native graph computes something else."""

    def onnx_operator(self):
        operator = super().onnx_operator()
        return type(operator)(operator.op_type, operator.W, operator.R, operator.B, {"linear_before_reset": 0})


def test_a_native_operator_that_is_not_the_cell_is_caught():
    with pytest.raises(AssertionError, match="MisdeclaredGRUCell: sequence graph from declared layers vs torch"):
        check_cell(MisdeclaredGRUCell)


class LeakyPaddingStack(OneLayer):
    """Wrong on purpose: runs its cell over the padding too (every sequence as long as the batch)."""

    def forward(self, x, lengths, state=None):
        return super().forward(x, torch.full_like(lengths, x.shape[1]), state)


def test_a_topology_whose_padding_leaks_is_caught():
    with pytest.raises(
        AssertionError, match=r"LeakyPaddingStack.forward from zero states: outputs past sequence \d+'s length"
    ):
        check_topology(LeakyPaddingStack, export=False)


class HiddenSizedStates(Stacked):
    """Wrong on purpose: says every state is hidden_size wide, as a topology written before
    projected cells would; its graphs' state inputs would have the wrong shape."""

    def __init__(self, cell_cls, input_size, hidden_size, cell_options, num_layers=2, dropout=0.0):
        super().__init__(cell_cls, input_size, hidden_size, cell_options, num_layers, dropout)
        self.state_sizes = (hidden_size,) * len(self.state_names)


def test_a_topology_that_assumes_hidden_sized_states_is_caught():
    # the kit's default cell has h narrower than c, so the assumption shows without a projected cell
    with pytest.raises(AssertionError, match=r"HiddenSizedStates.state_sizes \(5, 5\) must be its cells' \(3, 5\)"):
        check_topology(HiddenSizedStates, export=False)


class KeywordOnlyStack(Stacked):
    """Wrong on purpose: the engine passes cell_options positionally."""

    def __init__(self, cell_cls, input_size, hidden_size, *, cell_options, num_layers=2, dropout=0.0):
        super().__init__(cell_cls, input_size, hidden_size, cell_options, num_layers, dropout)


def test_a_topology_the_engine_cannot_construct_is_caught():
    with pytest.raises(AssertionError, match=r"KeywordOnlyStack: the engine builds it as \(cell_cls, input_size"):
        check_topology(KeywordOnlyStack, export=False)


# -- a subclass of a built-in topology is exported as itself ----------------------------------------


def _stack_slots(per_layer):
    return tuple(torch.stack(parts, dim=1) for parts in zip(*per_layer))


class ResidualStack(Stacked):
    """A plugin's residual stack: each layer after the first adds its input to its output. It
    changes ``forward`` and ``step`` and declares no layers, so the parent's declaration (plain
    stacked cells, which the engine would export as native GRU operators) no longer holds."""

    def forward(self, x, lengths, state=None):
        state = self.zero_state(x.shape[0], x.device) if state is None else state
        finals = []
        for layer, cell in enumerate(self.cells):
            out, final = cell.forward_sequence(x, lengths, tuple(s[:, layer] for s in state))
            x = out + x if layer else out  # zero past each length stays zero
            finals.append(final)
        return x, _stack_slots(finals)

    def step(self, x_t, state):
        news = []
        for layer, cell in enumerate(self.cells):
            news.append(cell(x_t, tuple(s[:, layer] for s in state)))
            x_t = news[-1][0] + x_t if layer else news[-1][0]
        return x_t, _stack_slots(news)


class ResidualStackClaimingPlainLayers(ResidualStack):
    """Wrong on purpose: re-declares the parent's layers, which do not describe its residual computation."""

    def layers(self):
        return Layers([(cell,) for cell in self.cells])


def test_a_residual_subclass_of_a_builtin_topology_is_exported_as_itself():
    gru = _registered("cell", "gru")
    assert not declares_layers(ResidualStack)
    assert declared_layers(ResidualStack(gru, 3, 5, {})) is None  # no native graph of the parent's computation
    # its step graph is traced from its own step, its sequence graph a Loop around that: both agree with torch
    check_topology(ResidualStack, gru, options={"num_layers": 3})


def test_a_layers_declaration_that_is_not_the_computation_is_caught():
    # the check that passes ResidualStack fails once it claims plain stacked layers: the graph built from them differs
    assert declares_layers(ResidualStackClaimingPlainLayers)
    with pytest.raises(
        AssertionError, match="ResidualStackClaimingPlainLayers: sequence graph from declared layers vs torch"
    ):
        check_topology(ResidualStackClaimingPlainLayers, _registered("cell", "gru"))


# -- a projected LSTM's served graphs carry each state at its own size ------------------------------


def test_projected_lstm_step_graph_has_a_narrow_h_and_a_hidden_wide_c(tmp_path):
    from seqpipe.initial_state import InitialState
    from seqpipe.models import SequenceModel
    from seqpipe.onnx.export import export_step

    hidden, proj, layers = 7, 3, 2
    topology = Stacked(_registered("cell", "projected_lstm"), 4, hidden, {"proj_size": proj}, num_layers=layers)
    model = SequenceModel(
        nn.Identity(), topology, nn.Linear(proj, 2), InitialState("zeros", topology.state_shapes), output="identity"
    )
    path = tmp_path / "step.onnx"
    export_step(model, torch.zeros(2, 4), path, opset=18, exporter="dynamo")
    graph = onnx.load(str(path)).graph

    def dims(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    inputs, outputs = dims(graph.input), dims(graph.output)
    assert inputs["state_in.h"][1:] == [layers, proj] and inputs["state_in.c"][1:] == [layers, hidden]
    assert outputs["state_out.h"][1:] == [layers, proj] and outputs["state_out.c"][1:] == [layers, hidden]
    assert isinstance(inputs["state_in.h"][0], str), "the batch axis must stay dynamic"


# -- a broken task fails ----------------------------------------------------------------------------


class ForecastWithoutItsMonitor(ForecastTask):
    """Wrong on purpose: evaluation leaves out the metric that picks the best epoch."""

    def evaluate(self, model, split, batch_size=256):
        return {k: v for k, v in super().evaluate(model, split, batch_size).items() if k != self.monitor}


def test_a_task_whose_evaluation_lacks_its_monitor_is_caught(tmp_path):
    # not registered: check_task adds it to a copy of the registry under its qualified name
    with pytest.raises(AssertionError, match="ForecastWithoutItsMonitor.evaluate\\('validation'\\) must return 'rmse'"):
        check_task(ForecastWithoutItsMonitor, registry=REGISTRY, workdir=tmp_path)
    assert "tests" not in " ".join(REGISTRY.names("task"))  # the caller's registry is left as it was


def test_check_cell_names_a_missing_state_sizes_declaration():
    from seqpipe.kit.probes import kit_classes

    class ForgetsStateSizes(kit_classes().NarrowOutputCell):
        state_sizes = Cell.state_sizes  # as a projected cell written without declaring its narrower h

    with pytest.raises(
        AssertionError,
        match=r"ForgetsStateSizes\.forward failed on states of its declared widths state_sizes = "
        r"\(5, 5\) \(not declared: every state is hidden_size = 5 wide by default; a cell whose states differ "
        r"in width must declare state_sizes\): RuntimeError",
    ):
        check_cell(ForgetsStateSizes, export=False)


def test_the_kit_names_a_contract_name_reused_for_something_else():
    class LayersAsAttribute(Stacked):
        layers = None  # the contract's layers() is a method

    with pytest.raises(
        AssertionError,
        match=r"LayersAsAttribute\.layers is an attribute, but 'layers' is a method of the "
        r"Topology contract",
    ):
        check_topology(LayersAsAttribute, export=False)

    class StoresLayers(Stacked):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.layers = nn.ModuleList()

    with pytest.raises(AssertionError, match=r"StoresLayers stores a module as self\.layers, but 'layers' is a method"):
        check_topology(StoresLayers, export=False)
