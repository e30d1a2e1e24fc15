"""The seed's three cells — vanilla tanh RNN, LSTM and GRU — and a projected LSTM.

Each keeps its weights in torch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` layout (one layer, one
direction), so the whole-sequence path can run the fused oneDNN/cuDNN kernel over a packed batch,
while the step path spells the same recurrence out in plain matmuls that export to any ONNX
runtime. Tests hold the two paths equal. The three seed cells declare their native ONNX operator
(weights reordered to its gate order); the projected LSTM has none, and is exported as itself.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqpipe import hookimpl
from seqpipe.contracts import Cell, OnnxOperator, State


class FusedCellOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bias: bool = True  # both bias vectors b_ih and b_hh, as in the seed's two nn.Linear layers


class FusedCell(Cell):
    """A cell whose parameters live in a one-layer torch RNN module (``self.fused``)."""

    fused_class: ClassVar[type[nn.RNNBase]]
    Options = FusedCellOptions

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **fused_kwargs) -> None:
        super().__init__(input_size, hidden_size)
        self.fused = self.fused_class(
            input_size, hidden_size, num_layers=1, bias=bias, batch_first=True, **fused_kwargs
        )

    def _gates(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and hidden projections ``[B, G·H]`` each, in torch's gate order."""
        f = self.fused
        return F.linear(x_t, f.weight_ih_l0, f.bias_ih_l0 if f.bias else None), F.linear(
            h, f.weight_hh_l0, f.bias_hh_l0 if f.bias else None
        )

    def forward_sequence(self, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hx = tuple(s.unsqueeze(0).contiguous() for s in state)  # [1, B, size]: torch's layer-first layout
        out, final = self.fused(packed, hx if len(hx) > 1 else hx[0])
        outputs, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        final = final if isinstance(final, tuple) else (final,)
        return outputs, tuple(s.squeeze(0) for s in final)

    def _onnx_weights(self, gate_order: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W [G·H, I], R [G·H, H], B [2·G·H] with torch's gate blocks reordered to ONNX's."""
        f, h = self.fused, self.hidden_size

        def reorder(t: torch.Tensor) -> np.ndarray:
            blocks = t.detach().cpu().float().numpy().reshape(len(gate_order), h, *t.shape[1:])
            return blocks[gate_order].reshape(len(gate_order) * h, *t.shape[1:])

        w, r = reorder(f.weight_ih_l0), reorder(f.weight_hh_l0)
        b = (
            np.concatenate([reorder(f.bias_ih_l0), reorder(f.bias_hh_l0)])
            if f.bias
            else np.zeros(2 * len(gate_order) * h, np.float32)
        )
        return w, r, b


class VanillaOptions(FusedCellOptions):
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class VanillaRNNCell(FusedCell):
    """The seed's ``VanillaRNNCell``: ``h_t = tanh(W_xh x_t + b_xh + W_hh h_{t-1} + b_hh)``."""

    fused_class = nn.RNN
    state_names = ("h",)
    Options = VanillaOptions

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh") -> None:
        super().__init__(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity)
        self.nonlinearity = nonlinearity
        self.activation = torch.tanh if nonlinearity == "tanh" else torch.relu

    def forward(self, x_t: torch.Tensor, state: State) -> State:
        gi, gh = self._gates(x_t, state[0])
        return (self.activation(gi + gh),)

    def onnx_operator(self) -> OnnxOperator:
        return OnnxOperator(
            "RNN", *self._onnx_weights([0]), {"activations": ["Tanh" if self.nonlinearity == "tanh" else "Relu"]}
        )


class GRUCell(FusedCell):
    """Gated recurrent unit, torch's formulation (reset gate applied after the hidden matmul)."""

    fused_class = nn.GRU
    state_names = ("h",)

    def forward(self, x_t: torch.Tensor, state: State) -> State:
        h = state[0]
        gi, gh = self._gates(x_t, h)
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h,)

    def onnx_operator(self) -> OnnxOperator:
        # torch's gates (r, z, n) -> ONNX's (z, r, h); torch applies the reset gate after the hidden matmul
        return OnnxOperator("GRU", *self._onnx_weights([1, 0, 2]), {"linear_before_reset": 1})


class LSTMCell(FusedCell):
    """Long short-term memory; state ``h`` (output) and ``c`` (cell memory)."""

    fused_class = nn.LSTM
    state_names = ("h", "c")

    def forward(self, x_t: torch.Tensor, state: State) -> State:
        h, c = state
        gi, gh = self._gates(x_t, h)
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return (torch.sigmoid(o) * torch.tanh(c), c)

    def onnx_operator(self) -> OnnxOperator:
        return OnnxOperator("LSTM", *self._onnx_weights([0, 3, 1, 2]))  # torch (i, f, g, o) -> ONNX (i, o, f, c)


class ProjectedLSTMOptions(FusedCellOptions):
    proj_size: int = Field(
        ge=1, description="size of the output and recurrent state h (< hidden_size, the cell memory c)"
    )

    @model_validator(mode="after")
    def _smaller_than_hidden(self, info: ValidationInfo) -> ProjectedLSTMOptions:
        hidden = (info.context or {}).get("hidden_size")
        if hidden is not None and self.proj_size >= hidden:
            raise ValueError(
                f"proj_size {self.proj_size} must be smaller than model.hidden_size {hidden}; lower proj_size, "
                "or use the 'lstm' cell"
            )
        return self


class ProjectedLSTMCell(FusedCell):
    """LSTM with a projected output (torch's ``nn.LSTM(proj_size=P)``, as in speech recognisers):
    the cell memory ``c`` has ``hidden_size`` H, the output and recurrent state ``h`` is projected to
    P < H, so the next layer, the head and the recurrence read P numbers instead of H.

    ONNX's LSTM operator has no projection, so this cell is exported as itself (ONNX Loops).
    """

    fused_class = nn.LSTM
    state_names = ("h", "c")
    Options = ProjectedLSTMOptions
    example_options = {"proj_size": 3}

    def __init__(self, input_size: int, hidden_size: int, *, proj_size: int, bias: bool = True) -> None:
        if not 1 <= proj_size < hidden_size:
            raise ValueError(f"ProjectedLSTMCell: proj_size {proj_size} must be in [1, hidden_size {hidden_size})")
        super().__init__(input_size, hidden_size, bias=bias, proj_size=proj_size)
        self.proj_size = proj_size

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size, self.hidden_size)

    def forward(self, x_t: torch.Tensor, state: State) -> State:
        h, c = state  # [B, P], [B, H]
        gi, gh = self._gates(x_t, h)
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return (F.linear(torch.sigmoid(o) * torch.tanh(c), self.fused.weight_hr_l0), c)


@hookimpl
def register_cells(register):
    register("vanilla", VanillaRNNCell)
    register("gru", GRUCell)
    register("lstm", LSTMCell)
    register("projected_lstm", ProjectedLSTMCell)
