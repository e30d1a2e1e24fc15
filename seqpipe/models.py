"""The network most tasks need: input encoding → topology → head → output activation.

Classification, tagging, generation and forecasting differ only in how an input step is encoded
(token embedding or raw features), how the first state is made, what the head reads (the last
valid step or every step) and the output activation (softmax or none). One class covers them, so
the step path, the fused sequence path and the native ONNX sequence graph are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqpipe.contracts import State, StepModel, Topology
from seqpipe.encoding import padded_ids
from seqpipe.pooling import PooledInitialState, Pooling


class SequenceModel(StepModel):
    """``embed`` (token ids → vectors, or identity for numeric inputs) ∘ ``body`` ∘ ``head``.

    ``output``: "softmax" (probabilities) or "identity" (real values).
    ``per_step``: the sequence output is ``y`` at every step [B, T, …] rather than after the last
    valid step [B, …]. ``initial``: a module ``initial(batch, device) -> State`` (see
    :mod:`seqpipe.initial_state`). ``pooling``: what the head reads of a whole sequence when not
    per-step (:mod:`seqpipe.pooling`); None: the output after the last valid step. A pooling with
    running statistics adds the ``pool`` state after the topology's states. ``residual``: the head
    predicts the change from the step's input (``y_t = x_t + head(h_t)``; real-valued inputs as wide
    as the output, ``output`` "identity", no pooling): a forecaster that starts from persistence
    and is not bounded by what the head can reach from a saturated state, so it follows a trend
    past the training range.
    """

    def __init__(
        self,
        embed: nn.Module,
        topology: Topology,
        head: nn.Linear,
        initial: nn.Module,
        *,
        output: str = "softmax",
        per_step: bool = False,
        dropout: float = 0.0,
        pooling: Pooling | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and (output != "identity" or pooling is not None or not isinstance(embed, nn.Identity)):
            raise ValueError(
                "a residual head adds the step's input to real-valued outputs: identity embed and output, no pooling"
            )
        self.initial: Any = (
            PooledInitialState(initial, topology.output_size) if pooling is not None and pooling.has_state else initial
        )
        self.embed = embed
        self.dropout = nn.Dropout(dropout)
        self.body = topology
        self.head = head
        self.output = output
        self.per_step = per_step
        self.pooling = pooling
        self.residual = residual

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(self.initial.state_names) if self.pooling is not None else self.body.state_names

    @property
    def state_shapes(self) -> dict[str, tuple[int, int]]:
        return dict(self.initial.shapes) if self.pooling is not None else self.body.state_shapes

    @property
    def streams(self) -> bool:
        return self.pooling is None or self.pooling.has_state

    def _split(self, state: State) -> tuple[State, torch.Tensor | None]:
        """The topology's states, and the pooling's running statistics (None without them)."""
        n = len(self.body.state_names)
        return tuple(state[:n]), (state[n] if len(state) > n else None)

    @property
    def token_input(self) -> bool:
        return isinstance(self.embed, nn.Sequential) and isinstance(self.embed[0], nn.Embedding)

    @property
    def body_input_size(self) -> int:
        """Features per step the topology reads (for numeric inputs: the input's own width)."""
        return self.body.input_size

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1) if self.output == "softmax" else logits

    def initial_state(self, batch: int) -> State:
        return self.initial(batch, self.head.weight.device)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Head outputs before activation (logits or values) — [B, T, …] if ``per_step`` else [B, …] —
        and the final state (from ``state``, or the initial one)."""
        state, pool = self._split(self.initial_state(x.shape[0]) if state is None else state)
        outputs, state = self.body(self.embed(x), lengths, state)  # [B, T, O]
        if self.per_step:
            return self.head(self.dropout(outputs)) + (x if self.residual else 0), state
        if self.pooling is not None:
            pooled, pool = self.pooling.whole(outputs, lengths, pool)
            return self.head(self.dropout(pooled)), state + ((pool,) if pool is not None else ())
        last = self.body.final_output(outputs, lengths, state)  # [B, O]
        y = self.head(self.dropout(last))
        if self.residual:  # plus each sequence's last valid input
            y = y + x[torch.arange(len(lengths), device=x.device), lengths.to(x.device) - 1]
        return y, state

    def run_sequence(
        self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        state, pool = self._split(self.initial_state(x.shape[0]) if state is None else state)
        outputs, state = self.body(self.embed(x), lengths, state)
        if self.pooling is not None:  # the running pooled vector after every step, as the step graph yields it
            running = self.pooling.running(outputs, pool)
            _, pool = self.pooling.whole(outputs, lengths, pool)
            return self.activate(self.head(running)), state + ((pool,) if pool is not None else ())
        return self.activate(self.head(outputs) + (x if self.residual else 0)), state  # [B, T, …]

    def sequence_output(
        self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        out, state = self(x, lengths, state)
        return self.activate(out), state

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        state, pool = self._split(state)
        if not self.streams:
            kind = self.pooling.kind if self.pooling is not None else "its"
            raise ValueError(f"{kind} pooling has no step-by-step form, so the model has no step graph")
        h, state = self.body.step(self.embed(x_t), state)  # h: [B, O]
        if pool is not None and self.pooling is not None:
            h, pool = self.pooling.step(h, pool)
            state = state + (pool,)
        return self.activate(self.head(h) + (x_t if self.residual else 0)), state


def token_embedding(vocab_size: int, embedding_size: int, dropout: float = 0.0) -> nn.Sequential:
    """Token ids → vectors; id 0 is padding."""
    return nn.Sequential(nn.Embedding(vocab_size, embedding_size, padding_idx=0), nn.Dropout(dropout))


UNK_ID = 1  # every built-in token encoding keeps id 0 for padding and id 1 for unknown tokens


def hide_tokens(
    tokens: torch.Tensor, fraction: float, shown_as: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Training augmentation: a random ``fraction`` of the non-padding token ids replaced by
    ``shown_as(ids)`` (e.g. <unk>). Steps of a word and its characters ([B, T, 1 + per_word]) hide
    the word id only, so the character CNN learns to stand in for a word it does not know."""
    words = tokens[..., 0] if tokens.dim() == 3 else tokens
    hide = (torch.rand(words.shape, device=words.device) < fraction) & (words != 0)
    words = torch.where(hide, shown_as(words), words)
    return torch.cat([words.unsqueeze(-1), tokens[..., 1:]], dim=-1) if tokens.dim() == 3 else words


def input_width(encoding, embedding_size: int) -> int:
    """Features per step the topology reads: the embedding's width for token ids (plus the character
    CNN's features when each word brings its characters), the vector's own for numbers."""
    if encoding.dtype != "int64":
        return encoding.size
    characters = encoding.word_characters()
    return embedding_size + (characters[2] if characters else 0)


def input_layer(encoding, embedding_size: int, dropout: float = 0.0) -> nn.Module:
    """What turns the encoding's steps into the vectors a topology reads: a token embedding for ids,
    nothing for number vectors (already standardised), which the topology reads as they are.
    Tasks build it after the topology, so a seed gives the same initial weights as it always has."""
    if encoding.dtype != "int64":
        return nn.Identity()
    characters = encoding.word_characters()
    if characters:
        from seqpipe.word_characters import WordCharacters

        characters_size, per_word, features = characters
        return WordCharacters(encoding.size, embedding_size, characters_size, per_word, features, dropout=dropout)
    return token_embedding(encoding.size, embedding_size, dropout)


def pad_inputs(encoded: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded sequences (id lists, lists of per-step id lists, or [time, features] float arrays) →
    (x [B, T] or [B, T, ids] int64, or [B, T, F] float32, zero-padded; lengths [B] int64)."""
    if encoded and not isinstance(encoded[0], list):  # number vectors
        lengths = torch.tensor([len(x) for x in encoded], dtype=torch.int64)
        x = torch.zeros(len(encoded), int(lengths.max()), encoded[0].shape[1], dtype=torch.float32)
        for row, values in enumerate(encoded):
            x[row, : len(values)] = torch.from_numpy(values)
        return x, lengths
    ids, id_lengths = padded_ids(encoded)  # id lists, or a word and its characters per step
    return torch.from_numpy(ids), torch.from_numpy(id_lengths)


def step_input(encoding, batch: int = 2) -> torch.Tensor:
    """An example one-step input for tracing: token ids [B] (or [B, ids] with a word's characters) or features [B,
    F]."""
    if encoding.dtype == "int64":
        characters = encoding.word_characters()
        return torch.ones(batch, *((1 + characters[1],) if characters else ()), dtype=torch.int64)
    return torch.zeros(batch, encoding.size)
