"""check_cell: the cell contract (:class:`seqpipe.contracts.Cell`), in torch and in the ONNX graphs
the engine writes for it."""

from __future__ import annotations

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
)
from seqpipe.kit.graphs import _check_layers_graph, _check_traced_step_graph, _probe_model
from seqpipe.kit.probes import kit_classes

if TYPE_CHECKING:
    import torch

    from seqpipe.contracts import Cell


# -- cells ------------------------------------------------------------------------------------------


def check_cell(
    cell_cls: type[Any],
    *,
    input_size: int = 3,
    hidden_size: int = 5,
    options: dict[str, Any] | None = None,
    lengths: Sequence[int] = LENGTHS,
    atol: float = 1e-5,
    seed: int = 0,
    export: bool = True,
    exporter: str = "dynamo",
) -> None:
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
    _check_no_clash(cell_cls, Cell)
    options = _cell_options(cell_cls, options, hidden_size)
    torch.manual_seed(seed)
    cell = cell_cls(input_size, hidden_size, **options).eval()
    _check_no_clash(cell, Cell)
    _check_cell_sizes(cell, name)
    generator = torch.Generator().manual_seed(seed)
    _check_one_cell_step(cell, name, generator)
    _check_cell_sequence(cell, name, _lengths(lengths), atol, generator)
    if export:
        topology = kit_classes().TwoLayerStack(cell_cls, input_size, hidden_size, options).eval()
        model = _probe_model(topology)
        _check_traced_step_graph(model, name, atol, generator, exporter)
        _check_layers_graph(model, name, _lengths(lengths), atol, generator)


def _check_state_names(state_names: Any, name: str) -> None:
    assert isinstance(state_names, tuple) and state_names, f"{name}.state_names must be a non-empty tuple"
    assert all(isinstance(n, str) and n.isidentifier() for n in state_names), (
        f"{name}.state_names {state_names!r}: each must be an identifier (it names graph inputs state_in.<name>)"
    )
    assert len(set(state_names)) == len(state_names), f"{name}.state_names {state_names!r} repeats a name"


def _check_cell_sizes(cell: Cell, name: str) -> None:
    sizes = tuple(cell.state_sizes)
    assert len(sizes) == len(cell.state_names), (
        f"{name}.state_sizes {sizes} needs one size per state {cell.state_names}"
    )
    assert all(isinstance(s, int) and s >= 1 for s in sizes), f"{name}.state_sizes {sizes} must be positive ints"
    assert cell.output_size == sizes[0], (
        f"{name}.output_size {cell.output_size} must be state_sizes[0] {sizes[0]}: the cell's output is state[0]"
    )


def _check_one_cell_step(cell: Cell, name: str, generator: torch.Generator) -> None:
    import torch

    batch = 3
    state = _random_state([(size,) for size in cell.state_sizes], batch, generator)
    try:
        with torch.no_grad():
            new = cell(torch.randn(batch, cell.input_size, generator=generator), state)
    except Exception as exc:
        from seqpipe.contracts import Cell

        undeclared = type(cell).state_sizes is Cell.state_sizes
        raise AssertionError(
            f"{name}.forward failed on states of its declared widths state_sizes = {tuple(cell.state_sizes)}"
            + (
                f" (not declared: every state is hidden_size = {cell.hidden_size} wide by default; a cell whose states "
                "differ in width must declare state_sizes)"
                if undeclared
                else ""
            )
            + f": {type(exc).__name__}: {exc}"
        ) from exc
    assert isinstance(new, tuple) and len(new) == len(state), (
        f"{name}.forward must return a tuple with one tensor per state name {cell.state_names}"
    )
    for state_name, before, after in zip(cell.state_names, state, new):
        assert after.shape == before.shape, (
            f"{name}.forward changed state '{state_name}' from {tuple(before.shape)} to {tuple(after.shape)}"
        )


def _check_cell_sequence(cell: Cell, name: str, lengths: torch.Tensor, atol: float, generator: torch.Generator) -> None:
    """forward_sequence equals the contract's masked step loop, and padding never matters."""
    import torch

    from seqpipe.contracts import masked_step_loop

    x = _ragged_batch(lengths, cell.input_size, generator)
    state = _random_state([(size,) for size in cell.state_sizes], len(lengths), generator)
    with torch.no_grad():
        out, final = cell.forward_sequence(x, lengths, state)
        ref_out, ref_final = masked_step_loop(cell, x, lengths, state)
    _check_run_shapes(
        out,
        final,
        (len(lengths), x.shape[1], cell.output_size),
        [s.shape for s in state],
        cell.state_names,
        f"{name}.forward_sequence",
    )
    _assert_close(out, ref_out, atol, f"{name}.forward_sequence outputs vs its step loop")
    for state_name, a, b in zip(cell.state_names, final, ref_final):
        _assert_close(a, b, atol, f"{name}.forward_sequence final state '{state_name}' vs its step loop")
    _check_padding_never_matters(
        lambda *args: cell.forward_sequence(*args), x, lengths, state, out, final, atol, f"{name}.forward_sequence"
    )
