"""What every contract check shares: the ragged lengths, plugin options validated as a pipeline's
are, name clashes with a contract, ragged batches and the comparisons that judge them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from seqpipe.contracts import State
    from seqpipe.registry import Registry


# ragged on purpose: the longest sequence twice, a single step, lengths in between (the batches
# are padded two steps past the longest, so padding is always there to leak)
LENGTHS = (6, 1, 4, 6, 3)
OPSET = 18


def fresh_registry() -> Registry:
    """A registry from a fresh plugin manager: the built-ins and every installed plugin."""
    from seqpipe.plugins import load_registry

    return load_registry(strict=True)[0]  # entries keep their distributions, for error messages


def _check_no_clash(obj: Any, contract: type) -> None:
    """A plugin class (or a built module) reusing a contract member's name for something else."""
    from seqpipe.reserved import class_clash, instance_clash

    clash = class_clash(obj, contract) if isinstance(obj, type) else instance_clash(obj, contract)
    assert clash is None, clash


def _cell_options(cell_cls: type[Any], options: dict[str, Any] | None, hidden_size: int) -> dict[str, Any]:
    """The options to build the cell with, validated the way a pipeline's [model.cell_options] are."""
    name = cell_cls.__name__
    example = _validated(cell_cls.Options, cell_cls.example_options, hidden_size, f"{name}.example_options")
    if options is None:
        return example
    return _validated(cell_cls.Options, options, hidden_size, f"{name}.Options")


def _validated(options_model: type[Any], options: dict[str, Any], hidden_size: int, what: str) -> dict[str, Any]:
    from pydantic import ValidationError

    try:  # validators may read the model sizes from the context, as at `seqpipe check`
        return options_model.model_validate(dict(options), context={"hidden_size": hidden_size}).model_dump()
    except ValidationError as exc:
        raise AssertionError(f"{what}: {options!r} does not validate (hidden_size {hidden_size}): {exc}") from exc


# -- ragged batches, shared by cells and topologies -------------------------------------------------


def _lengths(lengths: Sequence[int]) -> torch.Tensor:
    import torch

    assert len(lengths) >= 1 and min(lengths) >= 1, (
        f"lengths {tuple(lengths)}: at least one sequence, each at least 1 step"
    )
    return torch.tensor(list(lengths), dtype=torch.int64)


def _ragged_batch(lengths: torch.Tensor, features: int, generator: torch.Generator) -> torch.Tensor:
    """[B, longest + 2, features]: random values everywhere, so padding that leaks changes results."""
    import torch

    return torch.randn(len(lengths), int(lengths.max()) + 2, features, generator=generator)


def _random_state(shapes: list[tuple[int, ...]], batch: int, generator: torch.Generator) -> State:
    """A non-zero state, each tensor [batch, *shape]: a path that ignores the given state shows."""
    import torch

    return tuple(torch.randn(batch, *shape, generator=generator) * 0.5 for shape in shapes)


def _check_run_shapes(
    out: torch.Tensor,
    final: State,
    out_shape: tuple[int, ...],
    state_shapes: list,
    state_names: tuple[str, ...],
    what: str,
) -> None:
    assert tuple(out.shape) == tuple(out_shape), f"{what}: outputs are {tuple(out.shape)}, expected {tuple(out_shape)}"
    assert isinstance(final, tuple) and len(final) == len(state_names), (
        f"{what} must return the final state as a tuple with one tensor per state name {state_names}"
    )
    for state_name, got, expected in zip(state_names, final, state_shapes):
        assert tuple(got.shape) == tuple(expected), (
            f"{what}: final state '{state_name}' is {tuple(got.shape)}, expected {tuple(expected)}"
        )


def _check_padding_never_matters(
    run: Callable,
    x: torch.Tensor,
    lengths: torch.Tensor,
    state: State,
    out: torch.Tensor,
    final: State,
    atol: float,
    what: str,
    summary: torch.Tensor | None = None,
    summary_size: int | None = None,
) -> None:
    """Outputs are zero past each length, and each sequence run alone, unpadded, gives what it gave in
    the padded batch (outputs, final state, and the summary ``run`` returns third, if any)."""
    import torch

    if summary is not None:
        assert tuple(summary.shape) == (len(lengths), summary_size), (
            f"{what}: final_output is {tuple(summary.shape)}, expected {(len(lengths), summary_size)}"
        )
    for row, n in enumerate(lengths.tolist()):
        assert not out[row, n:].any(), f"{what}: outputs past sequence {row}'s length {n} must be zero"
        with torch.no_grad():
            alone = run(x[row : row + 1, :n], lengths[row : row + 1], tuple(s[row : row + 1] for s in state))
        _assert_close(
            alone[0][0], out[row, :n], atol, f"{what}: padding changed sequence {row}'s outputs (alone vs in the batch)"
        )
        for k, (a, b) in enumerate(zip(alone[1], final)):
            _assert_close(
                a[0], b[row], atol, f"{what}: padding changed sequence {row}'s final state {k} (alone vs in the batch)"
            )
        if summary is not None:
            _assert_close(alone[2][0], summary[row], atol, f"{what}: padding changed sequence {row}'s final_output")


def _assert_close(got: Any, expected: Any, atol: float, what: str, mask: np.ndarray | None = None) -> None:
    """The engine's parity rule: |got - expected| <= atol * max(1, |expected|), element-wise."""
    import numpy as np

    from seqpipe.onnx.parity import max_diff

    got, expected = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in (got, expected))
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    worst, scaled = max_diff(got, expected, mask)
    assert scaled <= atol and not math.isnan(worst), (
        f"{what}: differs by {worst:.2e} ({scaled:.2e} scaled by max(1, |expected|)), tolerance {atol:.0e}"
    )
