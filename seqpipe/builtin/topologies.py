"""Built-in topologies: a single layer, and layers stacked with dropout between them."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqpipe import hookimpl
from seqpipe.contracts import Cell, NoOptions, State, Topology


class StackedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_layers: int = Field(2, ge=1, description="how many cells are stacked, each feeding the next")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on each layer's output except the last (training only)")


class Stacked(Topology):
    """``num_layers`` cells, layer ``l+1`` reading layer ``l``'s outputs; state slot ``l`` is layer ``l``."""

    causal = True
    Options = StackedOptions

    def __init__(self, cell_cls: type[Cell], input_size: int, hidden_size: int, cell_options: dict[str, Any],
                 num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(cell_cls(size, hidden_size, **cell_options) for size in sizes)
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.num_slots = num_layers
        self.state_names = tuple(cell_cls.state_names)

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


class Single(Stacked):
    """One layer of cells: the seed's basic RNN."""

    Options = NoOptions

    def __init__(self, cell_cls: type[Cell], input_size: int, hidden_size: int, cell_options: dict[str, Any]) -> None:
        super().__init__(cell_cls, input_size, hidden_size, cell_options, num_layers=1, dropout=0.0)


@hookimpl
def register_topologies(register):
    register("single", Single)
    register("stacked", Stacked)
