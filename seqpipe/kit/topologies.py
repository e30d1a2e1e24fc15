"""check_topology: the topology contract (:class:`seqpipe.contracts.Topology`), in torch and in the
ONNX graphs the engine writes for it."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seqpipe.kit.common import (
    LENGTHS,
    _assert_close,
    _cell_options,
    _check_no_clash,
    _check_padding_never_matters,
    _check_run_shapes,
    _lengths,
    _ragged_batch,
    _random_state,
    _validated,
)
from seqpipe.kit.graphs import _check_layers_graph, _check_step_loop_graph, _probe_model
from seqpipe.kit.probes import kit_classes

if TYPE_CHECKING:
    import torch

    from seqpipe.contracts import Cell, Topology


# -- topologies -------------------------------------------------------------------------------------


def check_topology(
    topology_cls: type[Any],
    cell_cls: type[Any] | None = None,
    *,
    options: dict[str, Any] | None = None,
    cell_options: dict[str, Any] | None = None,
    input_size: int = 3,
    hidden_size: int = 5,
    lengths: Sequence[int] = LENGTHS,
    atol: float = 1e-5,
    seed: int = 0,
    export: bool = True,
    exporter: str = "dynamo",
) -> None:
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
    assert isinstance(topology_cls, type) and issubclass(topology_cls, Topology), (
        f"{name} must subclass seqpipe.contracts.Topology"
    )
    _check_no_clash(topology_cls, Topology)
    cell_cls = cell_cls or kit_classes().NarrowOutputCell
    cell_options = _cell_options(cell_cls, cell_options, hidden_size)
    options = _validated(topology_cls.Options, options or {}, hidden_size, f"{name}.Options")
    _check_topology_signature(topology_cls, cell_cls, cell_options, options)
    torch.manual_seed(seed)
    topology = topology_cls(cell_cls, input_size, hidden_size, cell_options, **options).eval()
    _check_no_clash(topology, Topology)
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


def _check_topology_signature(
    topology_cls: type[Any], cell_cls: type[Any], cell_options: dict[str, Any], options: dict[str, Any]
) -> None:
    """The engine builds every topology as ``Topology(cell_cls, input_size, hidden_size, cell_options, **options)``."""
    try:
        inspect.signature(topology_cls).bind(cell_cls, 3, 5, cell_options, **options)
    except TypeError as exc:
        raise AssertionError(
            f"{topology_cls.__name__}: the engine builds it as (cell_cls, input_size, hidden_size, cell_options, "
            f"**options) with options {sorted(options)} (its Options' fields), and its constructor "
            f"{inspect.signature(topology_cls)} refuses that: {exc}"
        ) from exc


def _check_topology_declarations(topology: Topology, probe: Cell, input_size: int, hidden_size: int, name: str) -> None:
    from seqpipe.contracts import declared_layers

    for attribute in ("input_size", "hidden_size", "num_slots", "output_size", "state_names", "state_sizes"):
        assert hasattr(topology, attribute), (
            f"{name} must set '{attribute}' in its constructor (see seqpipe.contracts.Topology)"
        )
    assert (topology.input_size, topology.hidden_size) == (input_size, hidden_size), (
        f"{name}: input_size, hidden_size are {topology.input_size}, {topology.hidden_size}; built with {input_size}, "
        f"{hidden_size}"
    )
    for attribute in ("num_slots", "output_size"):
        value = getattr(topology, attribute)
        assert isinstance(value, int) and value >= 1, f"{name}.{attribute} must be a positive int, found {value!r}"
    assert tuple(topology.state_names) == tuple(probe.state_names), (
        f"{name}.state_names {topology.state_names!r} must be its cells' {probe.state_names!r}"
    )
    assert tuple(topology.state_sizes) == tuple(probe.state_sizes), (
        f"{name}.state_sizes {tuple(topology.state_sizes)} must be its cells' {tuple(probe.state_sizes)} (a state need "
        "not be hidden_size wide)"
    )
    layers = declared_layers(topology)
    if layers is not None:
        directions = {len(cells) for cells in layers.cells}
        assert len(directions) == 1 and directions <= {1, 2}, (
            f"{name}.layers(): every layer needs the same 1 or 2 directions"
        )
        slots = sum(len(cells) for cells in layers.cells)
        assert slots == topology.num_slots, (
            f"{name}.layers() holds {slots} cells, and num_slots is {topology.num_slots}"
        )


def _check_topology_forward(
    topology: Topology, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator
) -> None:
    import torch

    batch = len(lengths)
    x = _ragged_batch(lengths, topology.input_size, generator)
    zeros = topology.zero_state(batch)
    shapes = [(batch, *shape) for shape in topology.state_shapes.values()]
    assert [tuple(s.shape) for s in zeros] == shapes, (
        f"{name}.zero_state gives {[tuple(s.shape) for s in zeros]}, expected {shapes}"
    )
    with torch.no_grad():
        out, final = topology(x, lengths)
        out_zero, final_zero = topology(x, lengths, zeros)
    _check_run_shapes(
        out, final, (batch, x.shape[1], topology.output_size), shapes, topology.state_names, f"{name}.forward"
    )
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

        _check_padding_never_matters(
            run,
            x,
            lengths,
            state,
            out,
            final,
            atol,
            f"{name}.forward from {label} states",
            summary=topology.final_output(out, lengths, final),
            summary_size=topology.output_size,
        )


def _check_steps_equal_forward(
    topology: Topology, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator
) -> None:
    import torch

    from seqpipe.contracts import masked_steps

    batch = len(lengths)
    x = _ragged_batch(lengths, topology.input_size, generator)
    state = _random_state(list(topology.state_shapes.values()), batch, generator)
    with torch.no_grad():
        y, new = topology.step(x[:, 0], state)
        assert tuple(y.shape) == (batch, topology.output_size), (
            f"{name}.step: y is {tuple(y.shape)}, expected {(batch, topology.output_size)}"
        )
        assert isinstance(new, tuple) and [s.shape for s in new] == [s.shape for s in state], (
            f"{name}.step must return the state with the shapes it was given, {[tuple(s.shape) for s in state]}"
        )
        stepped, stepped_final = masked_steps(topology.step, x, lengths, state)
        out, final = topology(x, lengths, state)
    _assert_close(stepped, out, atol, f"{name}: step through masked_steps vs forward, outputs")
    for state_name, a, b in zip(topology.state_names, stepped_final, final):
        _assert_close(a, b, atol, f"{name}: step through masked_steps vs forward, final state '{state_name}'")
