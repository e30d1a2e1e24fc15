"""Contract checks for plugin authors, also loaded as a pytest plugin (``pytest11`` entry point).

Each check builds what seqpipe would build from your plugin, runs it on ragged batches (a single
step, the longest sequence, padding past it), exports the ONNX graphs the engine would write and
runs them in onnxruntime, and raises ``AssertionError`` naming your class and what broke::

    from seqpipe.testing import check_cell, check_task, check_topology

    def test_my_cell_honours_the_contract():
        check_cell(MyCell)                        # options: MyCell.example_options
        check_cell(MyCell, options={"activation": "tanh"})

    def test_my_topology_honours_the_contract():
        check_topology(MyTopology)                # stepped with a kit cell whose states differ in size
        check_topology(MyTopology, MyCell, options={"depth": 3})

    def test_my_task_honours_the_contract(seqpipe_registry):
        check_task(MyTask, registry=seqpipe_registry)   # on MyTask.example_pipeline's data

``export=False`` skips the ONNX part of ``check_cell`` and ``check_topology`` (milliseconds
instead of seconds: drive them with hypothesis over sizes and ragged ``lengths``).

Fixture ``seqpipe_registry``: a registry built by a fresh plugin manager, holding the built-ins
and every installed plugin (your own, once it is installed). The checks never import seqpipe's
built-in plugins: they run on what the contracts (:mod:`seqpipe.contracts`) declare, as the engine
does. Module import stays light (no torch) because pytest loads it in every session of an
environment where seqpipe is installed.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from seqpipe.contracts import Cell, State, Topology
    from seqpipe.registry import Registry

# ragged on purpose: the longest sequence twice, a single step, lengths in between (the batches
# are padded two steps past the longest, so padding is always there to leak)
LENGTHS = (6, 1, 4, 6, 3)
OPSET = 18


@pytest.fixture
def seqpipe_registry():
    return fresh_registry()


def fresh_registry() -> Registry:
    """A registry from a fresh plugin manager: the built-ins and every installed plugin."""
    from seqpipe.plugins import load_registry

    return load_registry(strict=True)[0]  # entries keep their distributions, for error messages


# -- cells ------------------------------------------------------------------------------------------

def check_cell(cell_cls: type, *, input_size: int = 3, hidden_size: int = 5, options: dict[str, Any] | None = None,
               lengths: Sequence[int] = LENGTHS, atol: float = 1e-5, seed: int = 0, export: bool = True,
               exporter: str = "dynamo") -> None:
    """Assert that ``cell_cls`` follows the cell contract of :class:`seqpipe.contracts.Cell`.

    Declarations: it subclasses ``Cell``; ``state_names`` is a non-empty tuple of distinct names;
    its ``Options`` accept ``options`` (default: ``cell_cls.example_options``, which must validate
    too) with the model sizes in the validation context; ``state_sizes`` has one positive size per
    state and ``output_size`` is ``state_sizes[0]`` (the output is ``state[0]``).

    Computation: one call maps ``(x_t [B, I], state)``, state ``k`` [B, state_sizes[k]], to a
    state of the same shapes; ``forward_sequence`` (fused or not) gives outputs [B, T, output_size]
    and final states equal to the masked step loop on a ragged batch; outputs are zero past each
    length; each sequence alone equals it padded in the batch.

    Export (``export``), through a two-layer stack of the cell that declares its layers: the step
    graph traced by torch.onnx (what the engine writes for a cell without a native operator, or
    with ``native_step = false``) agrees with torch on one step; the sequence graph the engine builds
    from declared layers (``seqpipe.onnx.native.sequence_graph``: the cell's native ONNX operator
    when it declares one, ``Cell.onnx_operator``; ONNX Loops over the exported cell otherwise)
    agrees with the cell's own ``forward_sequence`` at every valid step and on the final states,
    from zero states and from given ones. ``atol`` judges differences scaled by max(1, |torch|), the
    engine's parity rule.
    """
    import torch

    from seqpipe.contracts import Cell

    name = cell_cls.__name__
    assert isinstance(cell_cls, type) and issubclass(cell_cls, Cell), f"{name} must subclass seqpipe.contracts.Cell"
    _check_state_names(cell_cls.state_names, name)
    options = _cell_options(cell_cls, options, hidden_size)
    torch.manual_seed(seed)
    cell = cell_cls(input_size, hidden_size, **options).eval()
    _check_cell_sizes(cell, name)
    generator = torch.Generator().manual_seed(seed)
    _check_one_cell_step(cell, name, generator)
    _check_cell_sequence(cell, name, _lengths(lengths), atol, generator)
    if export:
        topology = _kit().TwoLayerStack(cell_cls, input_size, hidden_size, options).eval()
        model = _probe_model(topology)
        _check_traced_step_graph(model, name, atol, generator, exporter)
        _check_layers_graph(model, name, _lengths(lengths), atol, generator)


def _check_state_names(state_names: Any, name: str) -> None:
    assert isinstance(state_names, tuple) and state_names, f"{name}.state_names must be a non-empty tuple"
    assert all(isinstance(n, str) and n.isidentifier() for n in state_names), \
        f"{name}.state_names {state_names!r}: each must be an identifier (it names graph inputs state_in.<name>)"
    assert len(set(state_names)) == len(state_names), f"{name}.state_names {state_names!r} repeats a name"


def _cell_options(cell_cls: type, options: dict[str, Any] | None, hidden_size: int) -> dict[str, Any]:
    """The options to build the cell with, validated the way a pipeline's [model.cell_options] are."""
    name = cell_cls.__name__
    example = _validated(cell_cls.Options, cell_cls.example_options, hidden_size, f"{name}.example_options")
    if options is None:
        return example
    return _validated(cell_cls.Options, options, hidden_size, f"{name}.Options")


def _validated(options_model: type, options: dict[str, Any], hidden_size: int, what: str) -> dict[str, Any]:
    from pydantic import ValidationError

    try:  # validators may read the model sizes from the context, as at `seqpipe check`
        return options_model.model_validate(dict(options), context={"hidden_size": hidden_size}).model_dump()
    except ValidationError as exc:
        raise AssertionError(f"{what}: {options!r} does not validate (hidden_size {hidden_size}): {exc}") from exc


def _check_cell_sizes(cell: Cell, name: str) -> None:
    sizes = tuple(cell.state_sizes)
    assert len(sizes) == len(cell.state_names), f"{name}.state_sizes {sizes} needs one size per state {cell.state_names}"
    assert all(isinstance(s, int) and s >= 1 for s in sizes), f"{name}.state_sizes {sizes} must be positive ints"
    assert cell.output_size == sizes[0], \
        f"{name}.output_size {cell.output_size} must be state_sizes[0] {sizes[0]}: the cell's output is state[0]"


def _check_one_cell_step(cell: Cell, name: str, generator: torch.Generator) -> None:
    import torch

    batch = 3
    state = _random_state([(size,) for size in cell.state_sizes], batch, generator)
    with torch.no_grad():
        new = cell(torch.randn(batch, cell.input_size, generator=generator), state)
    assert isinstance(new, tuple) and len(new) == len(state), \
        f"{name}.forward must return a tuple with one tensor per state name {cell.state_names}"
    for state_name, before, after in zip(cell.state_names, state, new):
        assert after.shape == before.shape, \
            f"{name}.forward changed state '{state_name}' from {tuple(before.shape)} to {tuple(after.shape)}"


def _check_cell_sequence(cell: Cell, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    """forward_sequence equals the contract's masked step loop, and padding never matters."""
    import torch

    from seqpipe.contracts import masked_step_loop

    x = _ragged_batch(lengths, cell.input_size, generator)
    state = _random_state([(size,) for size in cell.state_sizes], len(lengths), generator)
    with torch.no_grad():
        out, final = cell.forward_sequence(x, lengths, state)
        ref_out, ref_final = masked_step_loop(cell, x, lengths, state)
    _check_run_shapes(out, final, (len(lengths), x.shape[1], cell.output_size), [s.shape for s in state], cell.state_names,
                      f"{name}.forward_sequence")
    _assert_close(out, ref_out, atol, f"{name}.forward_sequence outputs vs its step loop")
    for state_name, a, b in zip(cell.state_names, final, ref_final):
        _assert_close(a, b, atol, f"{name}.forward_sequence final state '{state_name}' vs its step loop")
    _check_padding_never_matters(lambda *args: cell.forward_sequence(*args), x, lengths, state, out, final, atol,
                                 f"{name}.forward_sequence")


# -- topologies -------------------------------------------------------------------------------------

def check_topology(topology_cls: type, cell_cls: type | None = None, *, options: dict[str, Any] | None = None,
                   cell_options: dict[str, Any] | None = None, input_size: int = 3, hidden_size: int = 5,
                   lengths: Sequence[int] = LENGTHS, atol: float = 1e-5, seed: int = 0, export: bool = True,
                   exporter: str = "dynamo") -> None:
    """Assert that ``topology_cls`` follows the topology contract of :class:`seqpipe.contracts.Topology`.

    ``cell_cls`` (default: a kit cell whose output state ``h`` is narrower than its memory ``c``, as
    in a projected LSTM, and that has no native operator) is built with ``cell_options`` (default: its
    ``example_options``); the topology with ``options`` (validated by its ``Options``).

    Declarations: it subclasses ``Topology``; it is built as ``(cell_cls, input_size, hidden_size,
    cell_options, **options)``; it sets ``input_size`` and ``hidden_size`` as given, positive
    ``num_slots`` and ``output_size``, ``state_names`` and ``state_sizes`` as its cells declare them;
    declared layers (``layers()``) hold ``num_slots`` cells, the same number of directions per layer.

    Computation, on a ragged batch: ``forward`` gives outputs [B, T, output_size], zero past each
    length, and final states [B, num_slots, size] per state; ``state=None`` equals ``zero_state``;
    each sequence alone equals it padded in the batch, from zero and from given states, outputs,
    final states and ``final_output`` [B, output_size] alike. Causal topologies: ``step`` keeps
    each state's shape, and stepping through ``masked_steps`` equals ``forward``.

    Export (``export``), as the engine exports it: a topology whose layers declaration holds
    (``contracts.declares_layers``) has its sequence graph built from the layers
    (``seqpipe.onnx.native.sequence_graph``), checked at every valid step and on the final states,
    and, when it overrides ``final_output``, also the graph of the summary; a causal topology
    without declared layers has its step graph traced by torch.onnx and a sequence graph that is an
    ONNX Loop around it (``seqpipe.onnx.loop.loop_sequence_graph``), both checked. A non-causal
    topology without declared layers has no graph the engine can write (``seqpipe check`` refuses it).
    """
    import torch

    from seqpipe.contracts import Topology, declares_layers

    name = topology_cls.__name__
    assert isinstance(topology_cls, type) and issubclass(topology_cls, Topology), f"{name} must subclass seqpipe.contracts.Topology"
    cell_cls = cell_cls or _kit().NarrowOutputCell
    cell_options = _cell_options(cell_cls, cell_options, hidden_size)
    options = _validated(topology_cls.Options, options or {}, hidden_size, f"{name}.Options")
    _check_topology_signature(topology_cls, cell_cls, cell_options, options)
    torch.manual_seed(seed)
    topology = topology_cls(cell_cls, input_size, hidden_size, cell_options, **options).eval()
    probe = cell_cls(input_size, hidden_size, **cell_options)
    _check_topology_declarations(topology, probe, input_size, hidden_size, name)
    generator = torch.Generator().manual_seed(seed)
    _check_topology_forward(topology, name, _lengths(lengths), atol, generator)
    if topology.causal:
        _check_steps_equal_forward(topology, name, _lengths(lengths), atol, generator)
    if not export:
        return
    if declares_layers(topology_cls):
        _check_layers_graph(_probe_model(topology), name, _lengths(lengths), atol, generator)
        if type(topology).final_output is not Topology.final_output:
            _check_layers_graph(_probe_model(topology, per_step=False), name, _lengths(lengths), atol, generator)
    elif topology.causal:
        _check_step_loop_graph(_probe_model(topology), name, _lengths(lengths), atol, generator, exporter)


def _check_topology_signature(topology_cls: type, cell_cls: type, cell_options: dict[str, Any], options: dict[str, Any]) -> None:
    """The engine builds every topology as ``Topology(cell_cls, input_size, hidden_size, cell_options, **options)``."""
    try:
        inspect.signature(topology_cls).bind(cell_cls, 3, 5, cell_options, **options)
    except TypeError as exc:
        raise AssertionError(f"{topology_cls.__name__}: the engine builds it as (cell_cls, input_size, hidden_size, cell_options, "
                             f"**options) with options {sorted(options)} (its Options' fields), and its constructor "
                             f"{inspect.signature(topology_cls)} refuses that: {exc}") from exc


def _check_topology_declarations(topology: Topology, probe: Cell, input_size: int, hidden_size: int, name: str) -> None:
    from seqpipe.contracts import declared_layers

    for attribute in ("input_size", "hidden_size", "num_slots", "output_size", "state_names", "state_sizes"):
        assert hasattr(topology, attribute), f"{name} must set '{attribute}' in its constructor (see seqpipe.contracts.Topology)"
    assert (topology.input_size, topology.hidden_size) == (input_size, hidden_size), \
        f"{name}: input_size, hidden_size are {topology.input_size}, {topology.hidden_size}; built with {input_size}, {hidden_size}"
    for attribute in ("num_slots", "output_size"):
        value = getattr(topology, attribute)
        assert isinstance(value, int) and value >= 1, f"{name}.{attribute} must be a positive int, found {value!r}"
    assert tuple(topology.state_names) == tuple(probe.state_names), \
        f"{name}.state_names {topology.state_names!r} must be its cells' {probe.state_names!r}"
    assert tuple(topology.state_sizes) == tuple(probe.state_sizes), \
        f"{name}.state_sizes {tuple(topology.state_sizes)} must be its cells' {tuple(probe.state_sizes)} (a state need not be hidden_size wide)"
    layers = declared_layers(topology)
    if layers is not None:
        directions = {len(cells) for cells in layers.cells}
        assert len(directions) == 1 and directions <= {1, 2}, f"{name}.layers(): every layer needs the same 1 or 2 directions"
        slots = sum(len(cells) for cells in layers.cells)
        assert slots == topology.num_slots, f"{name}.layers() holds {slots} cells, and num_slots is {topology.num_slots}"


def _check_topology_forward(topology: Topology, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    import torch

    batch = len(lengths)
    x = _ragged_batch(lengths, topology.input_size, generator)
    zeros = topology.zero_state(batch)
    shapes = [(batch, *shape) for shape in topology.state_shapes.values()]
    assert [tuple(s.shape) for s in zeros] == shapes, f"{name}.zero_state gives {[tuple(s.shape) for s in zeros]}, expected {shapes}"
    with torch.no_grad():
        out, final = topology(x, lengths)
        out_zero, final_zero = topology(x, lengths, zeros)
    _check_run_shapes(out, final, (batch, x.shape[1], topology.output_size), shapes, topology.state_names, f"{name}.forward")
    _assert_close(out, out_zero, atol, f"{name}.forward: state=None vs zero_state, outputs")
    for state_name, a, b in zip(topology.state_names, final, final_zero):
        _assert_close(a, b, atol, f"{name}.forward: state=None vs zero_state, final state '{state_name}'")
    given = _random_state(list(topology.state_shapes.values()), batch, generator)
    for label, state in (("zero", zeros), ("given", given)):
        with torch.no_grad():
            out, final = topology(x, lengths, state)

        def run(x_, lengths_, state_):
            outputs, finals = topology(x_, lengths_, state_)
            return outputs, finals, topology.final_output(outputs, lengths_, finals)

        _check_padding_never_matters(run, x, lengths, state, out, final, atol, f"{name}.forward from {label} states",
                                     summary=topology.final_output(out, lengths, final), summary_size=topology.output_size)


def _check_steps_equal_forward(topology: Topology, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    import torch

    from seqpipe.contracts import masked_steps

    batch = len(lengths)
    x = _ragged_batch(lengths, topology.input_size, generator)
    state = _random_state(list(topology.state_shapes.values()), batch, generator)
    with torch.no_grad():
        y, new = topology.step(x[:, 0], state)
        assert tuple(y.shape) == (batch, topology.output_size), f"{name}.step: y is {tuple(y.shape)}, expected {(batch, topology.output_size)}"
        assert isinstance(new, tuple) and [s.shape for s in new] == [s.shape for s in state], \
            f"{name}.step must return the state with the shapes it was given, {[tuple(s.shape) for s in state]}"
        stepped, stepped_final = masked_steps(topology.step, x, lengths, state)
        out, final = topology(x, lengths, state)
    _assert_close(stepped, out, atol, f"{name}: step through masked_steps vs forward, outputs")
    for state_name, a, b in zip(topology.state_names, stepped_final, final):
        _assert_close(a, b, atol, f"{name}: step through masked_steps vs forward, final state '{state_name}'")


# -- ragged batches, shared by cells and topologies -------------------------------------------------

def _lengths(lengths: Sequence[int]) -> torch.Tensor:
    import torch

    assert len(lengths) >= 1 and min(lengths) >= 1, f"lengths {tuple(lengths)}: at least one sequence, each at least 1 step"
    return torch.tensor(list(lengths), dtype=torch.int64)


def _ragged_batch(lengths: torch.Tensor, features: int, generator: torch.Generator) -> torch.Tensor:
    """[B, longest + 2, features]: random values everywhere, so padding that leaks changes results."""
    import torch

    return torch.randn(len(lengths), int(lengths.max()) + 2, features, generator=generator)


def _random_state(shapes: list[tuple[int, ...]], batch: int, generator: torch.Generator) -> State:
    """A non-zero state, each tensor [batch, *shape]: a path that ignores the given state shows."""
    import torch

    return tuple(torch.randn(batch, *shape, generator=generator) * 0.5 for shape in shapes)


def _check_run_shapes(out: torch.Tensor, final: State, out_shape: tuple[int, ...], state_shapes: list, state_names: tuple[str, ...],
                      what: str) -> None:
    assert tuple(out.shape) == tuple(out_shape), f"{what}: outputs are {tuple(out.shape)}, expected {tuple(out_shape)}"
    assert isinstance(final, tuple) and len(final) == len(state_names), \
        f"{what} must return the final state as a tuple with one tensor per state name {state_names}"
    for state_name, got, expected in zip(state_names, final, state_shapes):
        assert tuple(got.shape) == tuple(expected), f"{what}: final state '{state_name}' is {tuple(got.shape)}, expected {tuple(expected)}"


def _check_padding_never_matters(run: Callable, x: torch.Tensor, lengths: torch.Tensor, state: State, out: torch.Tensor,
                                 final: State, atol: float, what: str, summary: torch.Tensor | None = None,
                                 summary_size: int | None = None) -> None:
    """Outputs are zero past each length, and each sequence run alone, unpadded, gives what it gave in
    the padded batch (outputs, final state, and the summary ``run`` returns third, if any)."""
    import torch

    if summary is not None:
        assert tuple(summary.shape) == (len(lengths), summary_size), \
            f"{what}: final_output is {tuple(summary.shape)}, expected {(len(lengths), summary_size)}"
    for row, n in enumerate(lengths.tolist()):
        assert not out[row, n:].any(), f"{what}: outputs past sequence {row}'s length {n} must be zero"
        with torch.no_grad():
            alone = run(x[row:row + 1, :n], lengths[row:row + 1], tuple(s[row:row + 1] for s in state))
        _assert_close(alone[0][0], out[row, :n], atol, f"{what}: padding changed sequence {row}'s outputs (alone vs in the batch)")
        for k, (a, b) in enumerate(zip(alone[1], final)):
            _assert_close(a[0], b[row], atol, f"{what}: padding changed sequence {row}'s final state {k} (alone vs in the batch)")
        if summary is not None:
            _assert_close(alone[2][0], summary[row], atol, f"{what}: padding changed sequence {row}'s final_output")


def _assert_close(got: Any, expected: Any, atol: float, what: str, mask: np.ndarray | None = None) -> None:
    """The engine's parity rule: |got - expected| <= atol * max(1, |expected|), element-wise."""
    import numpy as np

    from seqpipe.onnx.parity import max_diff

    got, expected = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in (got, expected))
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    worst, scaled = max_diff(got, expected, mask)
    assert scaled <= atol and not math.isnan(worst), \
        f"{what}: differs by {worst:.2e} ({scaled:.2e} scaled by max(1, |expected|)), tolerance {atol:.0e}"


# -- ONNX graphs ------------------------------------------------------------------------------------

def _probe_model(topology: Topology, per_step: bool = True):
    """The topology inside a :class:`seqpipe.models.SequenceModel` that reads numbers and whose head is
    the identity, so the graphs' ``y`` is the topology's own outputs (every step, or the summary)."""
    import torch
    from torch import nn

    from seqpipe.initial_state import InitialState
    from seqpipe.models import SequenceModel

    head = nn.Linear(topology.output_size, topology.output_size)
    with torch.no_grad():
        head.weight.copy_(torch.eye(topology.output_size))
        head.bias.zero_()
    return SequenceModel(nn.Identity(), topology, head, InitialState("zeros", topology.state_shapes), output="identity",
                         per_step=per_step).eval()


def _check_traced_step_graph(model, name: str, atol: float, generator: torch.Generator, exporter: str) -> None:
    """The step graph torch.onnx traces from ``model.step`` agrees with torch on one step from given states."""
    from seqpipe.onnx.export import export_step

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        export_step(model, _example_step(model), path, opset=OPSET, exporter=exporter, native=False)
        _compare_one_step(model, _session(path), name, "traced step graph", atol, generator)


def _example_step(model) -> torch.Tensor:
    import torch

    return torch.zeros(2, model.body.input_size)


def _compare_one_step(model, session, name: str, label: str, atol: float, generator: torch.Generator) -> None:
    import torch

    batch = 3
    x_t = torch.randn(batch, model.body.input_size, generator=generator)
    state = _random_state(list(model.state_shapes.values()), batch, generator)
    with torch.no_grad():
        y, new = model.step(x_t, state)
    names = list(model.state_names)
    feeds = {"x": x_t.numpy(), **{f"state_in.{n}": s.numpy() for n, s in zip(names, state)}}
    got = session.run(["y", *(f"state_out.{n}" for n in names)], feeds)
    _assert_close(got[0], y, atol, f"{name}: {label} vs torch, y")
    for state_name, g, e in zip(names, got[1:], new):
        _assert_close(g, e, atol, f"{name}: {label} vs torch, state '{state_name}'")


def _check_layers_graph(model, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    """The sequence graph the engine builds from the topology's declared layers agrees with torch."""
    from seqpipe.onnx.native import sequence_graph

    size = model.body.output_size
    graph = sequence_graph(model, OPSET, size, "seqpipe_testing_sequence")
    _compare_sequence_graph(model, _session(graph), name, "sequence graph from declared layers", lengths, atol, generator)


def _check_step_loop_graph(model, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator, exporter: str) -> None:
    """A causal topology without declared layers: its step graph, and the ONNX Loop around it that
    is its sequence graph (as ``seqpipe.onnx.export.export_sequence`` writes it), agree with torch."""
    import onnx

    from seqpipe.onnx.export import export_step
    from seqpipe.onnx.loop import loop_sequence_graph

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.onnx"
        export_step(model, _example_step(model), path, opset=OPSET, exporter=exporter)
        _compare_one_step(model, _session(path), name, "step graph", atol, generator)
        step = onnx.load(str(path))
    graph = loop_sequence_graph(step, model.initial.served_values(), per_step=model.per_step)
    _compare_sequence_graph(model, _session(graph), name, "sequence graph (a Loop around the step graph)", lengths, atol, generator)


def _compare_sequence_graph(model, session, name: str, label: str, lengths: torch.Tensor, atol: float,
                            generator: torch.Generator) -> None:
    """``y`` (at every valid step, or the summary) and the final states, from the graph's default
    (zero) state and from given states fed as ``state_in.*``."""
    import numpy as np
    import torch

    x = _ragged_batch(lengths, model.body.input_size, generator)
    names = list(model.state_names)
    valid = (np.arange(x.shape[1])[None, :] < lengths.numpy()[:, None]) if model.per_step else None  # [B, T]
    given = _random_state(list(model.state_shapes.values()), len(lengths), generator)
    for start, state in (("zero states", None), ("given states", given)):
        with torch.no_grad():
            y, final = model.sequence_output(x, lengths, state)
        feeds = {"x": x.numpy(), "lengths": lengths.numpy()}
        if state is not None:
            feeds.update({f"state_in.{n}": s.numpy() for n, s in zip(names, state)})
        got = session.run(["y", *(f"state_out.{n}" for n in names)], feeds)
        _assert_close(got[0], y, atol, f"{name}: {label} vs torch from {start}, y", valid)
        for state_name, g, e in zip(names, got[1:], final):
            _assert_close(g, e, atol, f"{name}: {label} vs torch from {start}, final state '{state_name}'")


def _session(graph: Path | onnx.ModelProto):
    import onnxruntime as ort

    source = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: optional state_in.* are initializers by design, which onnxruntime warns about
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# -- tasks ------------------------------------------------------------------------------------------

def check_task(task_cls: type, *, registry: Registry | None = None, cell: str = "gru", topology: str = "single",
               hidden_size: int = 8, train_steps: int = 2, batch_size: int = 16, parity_sequences: int = 8,
               holdout_fraction: float | None = 0.03, evaluate_splits: Sequence[str] = ("validation",),
               workdir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Assert that ``task_cls`` follows the task contract of :class:`seqpipe.contracts.Task`, on its
    ``example_pipeline`` with the registry's ``cell`` and ``topology`` (names) and a tiny model.

    Declarations: it subclasses ``Task``; ``monitor_mode``, ``sequence_y``, ``splits`` and
    ``initial_states`` are valid; it declares ``example_pipeline``, whose task options its
    ``Options`` accept.

    The engine's sequence, on that pipeline (written to a TOML file, ``[export] parity_sequences``
    small; ``[data]`` validation and test fractions ``holdout_fraction`` unless the example sets them,
    so an untrained model's evaluation is quick; None keeps the defaults): it resolves through ``seqpipe.assembly.resolve_pipeline`` (``registry`` default: a fresh
    one; a task the registry lacks is added to a copy under its qualified name); ``prepare()`` returns
    the number of examples of each split in ``splits``, some to train on; ``build_model`` gives a
    module whose ``body`` is a ``Topology``, a ``StepModel`` when the engine exports its step or
    sequence graph; ``train_steps`` optimizer steps on shuffled
    training batches each give a finite scalar loss with finite gradients, not all zero;
    ``evaluate`` gives finite ``loss`` and ``monitor`` on each of ``evaluate_splits`` (default: the
    split the trainer evaluates every epoch); every graph the run would write
    (``resolved.graphs``, the task's own included) is exported and passes parity in
    ``seqpipe.exports.export_graphs``. Files go to ``workdir`` (default: a temporary directory).

    Returns what it saw: ``graphs``, ``counts``, ``losses``, ``metrics``, ``parity``.
    """
    from seqpipe.contracts import Task

    name = task_cls.__name__
    assert isinstance(task_cls, type) and issubclass(task_cls, Task), f"{name} must subclass seqpipe.contracts.Task"
    _check_task_declarations(task_cls, hidden_size)
    registry, task_name = _registry_with(task_cls, registry if registry is not None else fresh_registry())
    cell_cls = registry.get("cell", cell, "check_task(cell=...)").obj
    tables = pipeline_tables(task_cls, task_name, cell=cell, topology=topology, hidden_size=hidden_size,
                             cell_options=cell_cls.example_options, parity_sequences=parity_sequences, batch_size=batch_size,
                             holdout_fraction=holdout_fraction)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run_task_contract(task_cls, registry, tables, root, train_steps, list(evaluate_splits), seed)


def _check_task_declarations(task_cls: type, hidden_size: int) -> None:
    name = task_cls.__name__
    assert task_cls.monitor_mode in ("min", "max"), f"{name}.monitor_mode must be 'min' or 'max', found {task_cls.monitor_mode!r}"
    assert task_cls.sequence_y in ("final", "per_step"), f"{name}.sequence_y must be 'final' or 'per_step'"
    assert "train" in task_cls.splits, f"{name}.splits {task_cls.splits} must include 'train'"
    assert set(task_cls.initial_states) <= {"zeros", "random", "learnable", "conditioned"}, \
        f"{name}.initial_states {task_cls.initial_states}: unknown rule"
    example = task_cls.example_pipeline
    assert isinstance(example, dict) and "data" in example, \
        f"{name}.example_pipeline must be a dict of pipeline tables with a [data] table (a small pipeline on data a plugin registers)"
    _validated(task_cls.Options, example.get("task", {}).get("options", {}), hidden_size, f"{name}.Options, example_pipeline's task options")


def _registry_with(task_cls: type, registry: Registry) -> tuple[Registry, str]:
    """The registry and the task's name in it; a task it lacks (not installed yet) is added to a copy."""
    from seqpipe.registry import Registry

    for entry in registry.entries["task"].values():
        if entry.obj is task_cls:
            return registry, entry.name
    name = f"{task_cls.__module__}.{task_cls.__qualname__}"
    copy = Registry({kind: dict(entries) for kind, entries in registry.entries.items()}, dict(registry.clashes))
    copy.add("task", name, task_cls, "seqpipe.testing")
    return copy, name


def _run_task_contract(task_cls: type, registry: Registry, tables: dict, root: Path, train_steps: int, splits: list[str],
                       seed: int) -> dict[str, Any]:
    import torch

    from seqpipe.assembly import resolve_pipeline
    from seqpipe.contracts import StepModel, Topology
    from seqpipe.exports import export_graphs

    name = task_cls.__name__
    path = root / "pipeline.toml"
    path.write_text(pipeline_toml(tables), encoding="utf-8")
    resolved = resolve_pipeline(path, registry)
    task = resolved.make_task()
    counts = task.prepare()
    assert isinstance(counts, dict) and set(task_cls.splits) <= set(counts), \
        f"{name}.prepare() must return the number of examples per split {task_cls.splits}, returned {counts!r}"
    assert counts["train"] >= 1, f"{name}.prepare(): no training examples on its example_pipeline's data"
    torch.manual_seed(seed)
    model = task.build_model(resolved.make_topology, resolved.config.model.initial_state, resolved.config.model.initial_state_scale)
    assert isinstance(model, torch.nn.Module) and isinstance(getattr(model, "body", None), Topology), \
        f"{name}.build_model must return a module whose body is a Topology make_topology built (the engine reads it)"
    engine_graphs = [kind for kind in resolved.graphs if kind in ("step", "sequence")]
    assert not engine_graphs or isinstance(model, StepModel), \
        f"{name}.build_model must return a seqpipe.contracts.StepModel: the engine exports its {engine_graphs} graphs"
    losses = _train_steps(task, model, resolved.config.training.batch_size, train_steps, seed)
    metrics = {split: _evaluated(task, model.eval(), split) for split in splits}
    parity = export_graphs(resolved, task, model.eval(), root / "onnx", log=lambda line: None)
    missing = [kind for kind in resolved.graphs if kind not in parity["graphs"] or not (root / "onnx" / f"{kind}.onnx").is_file()]
    assert not missing, f"{name}: graphs {missing} of {resolved.graphs} were not written"
    failed = {kind: report["max_scaled_diff"] for kind, report in parity["graphs"].items() if not report["passed"]}
    assert not failed, f"{name}: exported graphs disagree with torch beyond {parity['tolerance']:.0e}: {failed}"
    return {"graphs": list(resolved.graphs), "counts": counts, "losses": losses, "metrics": metrics, "parity": parity}


def _train_steps(task, model, batch_size: int, steps: int, seed: int) -> list[float]:
    """A few optimizer steps the way the trainer takes them; each loss a finite scalar with gradients."""
    import torch

    name = type(task).__name__
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = task.batches("train", batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses = []
    for _, batch in zip(range(steps), batches):
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, f"{name}.loss must return a scalar tensor, returned {loss!r}"
        assert torch.isfinite(loss), f"{name}.loss is {loss.item()} on a training batch"
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{name}.loss: no gradient reaches the model's parameters"
        assert all(torch.isfinite(g).all() for g in grads), f"{name}.loss: a gradient is not finite"
        optimizer.step()
        losses.append(loss.item())
    assert losses, f"{name}.batches('train', {batch_size}) gave no batch"
    return losses


def _evaluated(task, model, split: str) -> dict[str, float]:
    name = type(task).__name__
    metrics = task.evaluate(model, split)
    for key in ("loss", task.monitor):
        assert key in metrics, f"{name}.evaluate('{split}') must return '{key}' (the loss, and the monitor {task.monitor!r}); got {sorted(metrics)}"
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), \
            f"{name}.evaluate('{split}')['{key}'] must be a finite number, got {metrics[key]!r}"
    return metrics


# -- pipeline files ---------------------------------------------------------------------------------

def pipeline_tables(task_cls: type, task_name: str, *, cell: str, topology: str, hidden_size: int,
                    cell_options: dict[str, Any] | None = None, topology_options: dict[str, Any] | None = None,
                    parity_sequences: int = 8, batch_size: int | None = None,
                    holdout_fraction: float | None = None) -> dict[str, dict[str, Any]]:
    """The task's ``example_pipeline`` laid over a model (registered names; pass a cell's
    ``example_options`` as ``cell_options``) and a small parity check: the tables of a pipeline file
    (see :func:`pipeline_toml`)."""
    model: dict[str, Any] = {"cell": cell, "topology": topology, "hidden_size": hidden_size}
    if cell_options:  # a cell with a required option declares example_options (projected_lstm's proj_size)
        model["cell_options"] = dict(cell_options)
    if topology_options:
        model["topology_options"] = dict(topology_options)
    base = {"model": model, "task": {"name": task_name}, "export": {"parity_sequences": parity_sequences}}
    if batch_size is not None:
        base["training"] = {"batch_size": batch_size}
    if holdout_fraction is not None:  # fewer validation and test examples: quicker evaluation and parity inputs
        base["data"] = {"validation_fraction": holdout_fraction, "test_fraction": holdout_fraction}
    return merge_tables(base, task_cls.example_pipeline or {})


def merge_tables(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` laid over it, table by table."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge_tables(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def pipeline_toml(tables: dict[str, dict[str, Any]]) -> str:
    """A pipeline file from nested dicts (see :func:`seqpipe.config.format_pipeline`)."""
    from seqpipe.config import format_pipeline

    return format_pipeline(tables)


# -- the kit's own cell and topology ----------------------------------------------------------------

@functools.cache
def _kit():
    """The kit's torch-level classes, defined on first use (this module is imported in every pytest
    session, so it imports no torch itself)."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    from seqpipe.contracts import Cell, Layers, State, Topology

    class NarrowOutputCell(Cell):
        """A plain two-state cell whose output ``h`` is narrower than its memory ``c`` (as in a projected
        LSTM), with no native operator: a topology that assumes every state is ``hidden_size`` wide, or
        a cell's output ``hidden_size`` wide, fails its check."""

        state_names = ("h", "c")

        def __init__(self, input_size: int, hidden_size: int) -> None:
            super().__init__(input_size, hidden_size)
            self.narrow = max(1, hidden_size - 2)
            self.memory = nn.Linear(input_size + self.narrow, hidden_size)
            self.project = nn.Linear(hidden_size, self.narrow, bias=False)

        @property
        def state_sizes(self) -> tuple[int, ...]:
            return (self.narrow, self.hidden_size)

        def forward(self, x_t: torch.Tensor, state: State) -> State:
            h, c = state
            c = 0.5 * c + torch.tanh(self.memory(torch.cat([x_t, h], dim=1)))
            return (torch.tanh(self.project(c)), c)

    def stack_slots(per_slot: list[State]) -> State:
        return tuple(torch.stack(parts, dim=1) for parts in zip(*per_slot))  # each [B, slots, size]

    class TwoLayerStack(Topology):
        """Two layers of a cell, the second reading the first's outputs; slot ``l`` is layer ``l``.
        It declares its layers, so the engine builds its graphs from the cells' declarations."""

        def __init__(self, cell_cls: type[Cell], input_size: int, hidden_size: int, cell_options: dict[str, Any]) -> None:
            super().__init__()
            first = cell_cls(input_size, hidden_size, **cell_options)
            self.cells = nn.ModuleList([first, cell_cls(first.output_size, hidden_size, **cell_options)])
            self.input_size, self.hidden_size = input_size, hidden_size
            self.output_size, self.num_slots = first.output_size, 2
            self.state_names, self.state_sizes = tuple(cell_cls.state_names), tuple(first.state_sizes)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
            state = self.zero_state(x.shape[0], x.device) if state is None else state
            finals = []
            for slot, cell in enumerate(self.cells):
                x, final = cell.forward_sequence(x, lengths, tuple(s[:, slot] for s in state))
                finals.append(final)
            return x, stack_slots(finals)

        def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            news = []
            for slot, cell in enumerate(self.cells):
                news.append(cell(x_t, tuple(s[:, slot] for s in state)))
                x_t = news[-1][0]
            return x_t, stack_slots(news)

        def layers(self) -> Layers:
            return Layers([(cell,) for cell in self.cells])

    return SimpleNamespace(NarrowOutputCell=NarrowOutputCell, TwoLayerStack=TwoLayerStack)
