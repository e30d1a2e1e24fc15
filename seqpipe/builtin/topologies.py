"""Built-in topologies: a single layer, and layers stacked with dropout between them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqpipe import hookimpl
from seqpipe.contracts import Cell, Layers, NoOptions, State, Topology


class StackedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_layers: int = Field(2, ge=1, description="how many cells are stacked, each feeding the next")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on each layer's output except the last (training only)"
    )


class Stacked(Topology):
    """``num_layers`` cells, layer ``l+1`` reading layer ``l``'s outputs; state slot ``l`` is layer ``l``."""

    causal = True
    Options = StackedOptions

    def __init__(
        self,
        cell_cls: type[Cell],
        input_size: int,
        hidden_size: int,
        cell_options: dict[str, Any],
        num_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        first = cell_cls(input_size, hidden_size, **cell_options)
        # each later layer reads the previous layer's output (a projected cell's is narrower than hidden_size)
        self.cells = nn.ModuleList(
            [first, *(cell_cls(first.output_size, hidden_size, **cell_options) for _ in range(num_layers - 1))]
        )
        self.dropout = nn.Dropout(dropout)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = first.output_size
        self.num_slots = num_layers
        self.state_names = tuple(cell_cls.state_names)
        self.state_sizes = first.state_sizes

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        finals = []
        for layer, cell in enumerate(self.cells):
            if layer:
                x = self.dropout(x)
            x, final = cell.forward_sequence(x, lengths, tuple(s[:, layer] for s in state))  # x: [B, T, H]
            finals.append(final)
        return x, tuple(torch.stack(parts, dim=1) for parts in zip(*finals))  # each [B, layers, H]

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        news = []
        for layer, cell in enumerate(self.cells):
            if layer:
                x_t = self.dropout(x_t)
            new = cell(x_t, tuple(s[:, layer] for s in state))
            news.append(new)
            x_t = new[0]  # [B, H]
        return x_t, tuple(torch.stack(parts, dim=1) for parts in zip(*news))

    def layers(self) -> Layers:
        return Layers([(cell,) for cell in self.cells])


class Single(Stacked):
    """One layer of cells: the seed's basic RNN."""

    Options = NoOptions

    def __init__(self, cell_cls: type[Cell], input_size: int, hidden_size: int, cell_options: dict[str, Any]) -> None:
        super().__init__(cell_cls, input_size, hidden_size, cell_options, num_layers=1, dropout=0.0)


class BidirectionalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_layers: int = Field(1, ge=1, description="bidirectional layers, each reading the previous one's merged outputs")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between layers (training only)")
    merge: Literal["concat", "sum"] = Field("concat", description="how forward and backward outputs combine")


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its own length; padding stays where it is. x: [B, T, F]."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, T]
    lengths = lengths.to(x.device).unsqueeze(1)  # [B, 1]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T]
    return x.gather(1, index.unsqueeze(2).expand_as(x))


class Bidirectional(Topology):
    """Forward and backward cells per layer, merged by concatenation or sum.

    Not causal: every output depends on the whole sequence, so there is no step function and no
    step graph. State slots are ``[layer0 forward, layer0 backward, layer1 forward, …]``.
    """

    causal = False
    Options = BidirectionalOptions

    def __init__(
        self,
        cell_cls: type[Cell],
        input_size: int,
        hidden_size: int,
        cell_options: dict[str, Any],
        num_layers: int = 1,
        dropout: float = 0.0,
        merge: str = "concat",
    ) -> None:
        super().__init__()
        first = cell_cls(input_size, hidden_size, **cell_options)
        merged = 2 * first.output_size if merge == "concat" else first.output_size
        sizes = [input_size] + [merged] * (num_layers - 1)
        self.forward_cells = nn.ModuleList(
            [first, *(cell_cls(size, hidden_size, **cell_options) for size in sizes[1:])]
        )
        self.backward_cells = nn.ModuleList(cell_cls(size, hidden_size, **cell_options) for size in sizes)
        self.dropout = nn.Dropout(dropout)
        self.merge = merge
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = merged
        self.num_slots = 2 * num_layers
        self.state_names = tuple(cell_cls.state_names)
        self.state_sizes = first.state_sizes

    def _merge(self, fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
        return torch.cat([fwd, bwd], dim=-1) if self.merge == "concat" else fwd + bwd

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        finals = []
        for layer, (fcell, bcell) in enumerate(zip(self.forward_cells, self.backward_cells)):
            if layer:
                x = self.dropout(x)
            fwd, f_final = fcell.forward_sequence(x, lengths, tuple(s[:, 2 * layer] for s in state))
            bwd_rev, b_final = bcell.forward_sequence(
                reverse_padded(x, lengths), lengths, tuple(s[:, 2 * layer + 1] for s in state)
            )
            x = self._merge(fwd, reverse_padded(bwd_rev, lengths))  # [B, T, output_size]
            finals += [f_final, b_final]
        return x, tuple(torch.stack(parts, dim=1) for parts in zip(*finals))

    def final_output(self, outputs: torch.Tensor, lengths: torch.Tensor, state: State) -> torch.Tensor:
        """The last layer's forward output after the last valid step merged with its backward output
        after reading back to step 0: exactly the two final states of the last layer."""
        return self._merge(state[0][:, -2], state[0][:, -1])

    def layers(self) -> Layers:
        return Layers(list(zip(self.forward_cells, self.backward_cells)), merge=self.merge)


@hookimpl
def register_topologies(register):
    register("single", Single)
    register("stacked", Stacked)
    register("bidirectional", Bidirectional)
