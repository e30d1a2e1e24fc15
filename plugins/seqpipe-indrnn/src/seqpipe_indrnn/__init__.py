"""IndRNN cell for seqpipe: ``h_t = act(W x_t + b + u ⊙ h_{t-1})``, one recurrent weight per unit."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqpipe import hookimpl
from seqpipe.contracts import Cell


class IndRNNOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activation: Literal["relu", "tanh"] = "relu"
    recurrent_init_max: float = Field(1.0, gt=0.0, description="u starts uniform in [0, this]")


class IndRNNCell(Cell):
    """Inputs: ``x_t`` [B, I], ``state`` (h [B, H],). Outputs: (h' [B, H],)."""

    state_names = ("h",)
    Options = IndRNNOptions

    def __init__(
        self, input_size: int, hidden_size: int, activation: str = "relu", recurrent_init_max: float = 1.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Parameter(torch.rand(hidden_size) * recurrent_init_max)  # [H]
        self.activation = torch.relu if activation == "relu" else torch.tanh

    def forward(self, x_t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.activation(self.input(x_t) + self.recurrent * state[0]),)

    # no fused kernel exists, so forward_sequence is the contract's masked step loop


@hookimpl
def register_cells(register):
    register("indrnn", IndRNNCell)
