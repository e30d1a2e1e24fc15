"""The kit's own cell and topology: a cell whose states differ in width and a two-layer stack, to
probe topologies and cells with what a plugin's own might be."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from seqpipe.contracts import Cell, State


# -- the kit's own cell and topology ----------------------------------------------------------------


@functools.cache
def kit_classes():
    """The kit's torch-level classes, defined on first use (this module is imported in every pytest
    session, so it imports no torch itself)."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    from seqpipe.contracts import Cell, Layers, Topology

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

        def __init__(
            self, cell_cls: type[Cell], input_size: int, hidden_size: int, cell_options: dict[str, Any]
        ) -> None:
            super().__init__()
            first = cell_cls(input_size, hidden_size, **cell_options)
            self.cells = nn.ModuleList([first, cell_cls(first.output_size, hidden_size, **cell_options)])
            self.input_size, self.hidden_size = input_size, hidden_size
            self.output_size, self.num_slots = first.output_size, 2
            self.state_names, self.state_sizes = tuple(cell_cls.state_names), tuple(first.state_sizes)

        def forward(
            self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None
        ) -> tuple[torch.Tensor, State]:
            state = self.zero_state(x.shape[0], x.device) if state is None else state
            finals = []
            for slot, cell in enumerate(self.stacked()):
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
            return Layers([(cell,) for cell in self.stacked()])

        def stacked(self) -> list[Cell]:
            """The two cells, typed as cells (torch types a ModuleList's items as modules)."""
            return [cell for cell in self.cells if isinstance(cell, Cell)]

    return SimpleNamespace(NarrowOutputCell=NarrowOutputCell, TwoLayerStack=TwoLayerStack)
