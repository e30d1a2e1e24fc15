"""seqpipe.testing: the contract check plugin authors run must pass good cells and catch bad ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqpipe.contracts import Cell
from seqpipe.testing import check_cell


@pytest.mark.parametrize("name", ["vanilla", "gru", "lstm"])
def test_builtin_cells_pass(seqpipe_registry, name):
    check_cell(seqpipe_registry.get("cell", name, "test").obj)


class LeakyPaddingCell(Cell):
    """Wrong on purpose: its 'fused' path ignores lengths, so padding changes results."""

    state_names = ("h",)

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)

    def forward(self, x_t, state):
        return (torch.tanh(x_t @ self.rnn.weight_ih_l0.T + self.rnn.bias_ih_l0 + state[0] @ self.rnn.weight_hh_l0.T + self.rnn.bias_hh_l0),)

    def forward_sequence(self, x, lengths, state):
        out, h = self.rnn(x, state[0].unsqueeze(0).contiguous())
        return out, (h[0],)


def test_a_cell_that_ignores_lengths_is_caught():
    with pytest.raises(AssertionError, match="LeakyPaddingCell"):
        check_cell(LeakyPaddingCell)
