"""Initial-state strategies from the seed: zeros, random, learnable, conditioned.

- ``zeros``: every sequence starts from zeros.
- ``random``: while training, each sequence starts from N(0, scale²) noise (drawn from torch's
  seeded generator), a regulariser; evaluation and every export start from zeros, the noise's
  mean, so served predictions are deterministic.
- ``learnable``: one trained vector per state slot, shared by all sequences. Exports carry the
  values: the sequence graph builds them in, and the step graph's metadata lists them under
  ``initial_state.values`` for the caller to feed as the first ``state_in.*``.
- ``conditioned`` (:class:`ConditionedInitialState`): computed from a condition by a separate
  network, for tasks that have a condition (generate); exported as an init graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from seqpipe.contracts import State

RULES = ("zeros", "random", "learnable")  # "conditioned": ConditionedInitialState, below


class InitialState(nn.Module):
    """``shapes``: each state's shape after the batch axis, ``{name: (slots, size)}`` (``Topology.state_shapes``)."""

    def __init__(self, rule: str, shapes: dict[str, tuple[int, int]], scale: float = 0.1) -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown initial-state rule {rule!r}; expected one of {RULES}")
        self.rule, self.shapes, self.scale = rule, dict(shapes), scale
        self.state_names = tuple(self.shapes)
        if rule == "learnable":
            self.values = nn.ParameterDict(
                {n: nn.Parameter(torch.zeros(*shape)) for n, shape in self.shapes.items()}
            )  # [S, H]

    def forward(self, batch: int, device: torch.device | None = None) -> State:
        if self.rule == "learnable":
            return tuple(self.values[n].unsqueeze(0).expand(batch, -1, -1) for n in self.state_names)  # [B, S, H]
        if self.rule == "random" and self.training:
            return tuple(torch.randn(batch, *shape, device=device) * self.scale for shape in self.shapes.values())
        return tuple(torch.zeros(batch, *shape, device=device) for shape in self.shapes.values())

    def spec(self) -> dict[str, Any]:
        """How a program with only the ONNX file starts a sequence."""
        if self.rule == "learnable":
            values = {n: self.values[n].detach().cpu().tolist() for n in self.state_names}
            return {
                "rule": "learnable",
                "values": values,
                "note": "feed values[name] ([slots][size], the same for every sequence) as the first state_in.<name>",
            }
        if self.rule == "random":
            return {
                "rule": "random",
                "scale": self.scale,
                "served_as": "zeros",
                "note": "noise was a training-time regulariser; start every sequence from zeros",
            }
        return {"rule": "zeros", "note": "start every sequence from zeros of the state shape"}

    def served_values(self) -> dict[str, np.ndarray]:
        """The [S, H] state every served sequence starts from (zeros unless learnable)."""
        if self.rule == "learnable":
            return {n: self.values[n].detach().cpu().float().numpy() for n in self.state_names}
        return {n: np.zeros(shape, np.float32) for n, shape in self.shapes.items()}


class ConditionedInitialState(nn.Module):
    """The seed's fourth choice: the initial state computed from a condition by a separate network.

    A condition — a label id, embedded, or a vector of numbers, projected linearly — is mapped
    through a linear layer and tanh to every state slot: ``state[name] = tanh(W · embed(condition) + b)``
    reshaped to [B, slots, size] per state. It is
    exported as its own graph (``init.onnx``: ``condition`` → ``state_out.*``), which a program runs
    once per sequence before stepping.
    """

    rule = "conditioned"

    def __init__(
        self,
        num_conditions: int,
        shapes: dict[str, tuple[int, int]],
        condition: dict[str, Any],
        condition_size: int = 16,
    ) -> None:
        """``num_conditions``: how many labels, or the vector's length when ``condition["kind"]`` is "vector";
        ``shapes``: ``{name: (slots, size)}`` per state."""
        super().__init__()
        self.shapes, self.condition = dict(shapes), condition
        self.state_names = tuple(self.shapes)
        vector = condition.get("kind") == "vector"
        self.embed = (
            nn.Linear(num_conditions, condition_size) if vector else nn.Embedding(num_conditions, condition_size)
        )
        self.project = nn.Linear(condition_size, sum(s * h for s, h in self.shapes.values()))

    def from_condition(self, condition: torch.Tensor) -> State:
        """condition [B] int64 labels or [B, D] float vectors → one [B, slots, size] tensor per state name."""
        flat = torch.tanh(self.project(self.embed(condition)))  # [B, Σ S·H]
        parts = flat.split([s * h for s, h in self.shapes.values()], dim=1)
        return tuple(part.reshape(condition.shape[0], *shape) for part, shape in zip(parts, self.shapes.values()))

    def forward(self, batch: int, device: torch.device | None = None) -> State:
        """Zeros: only for shapes (export examples); sequences start from :meth:`from_condition`."""
        return tuple(torch.zeros(batch, *shape, device=device) for shape in self.shapes.values())

    def spec(self) -> dict[str, Any]:
        return {
            "rule": "conditioned",
            "graph": "init.onnx",
            "condition": self.condition,
            "note": "run init.onnx on the condition (see condition.input); its state_out.<name> is the first "
            "state_in.<name>",
        }

    def served_values(self) -> dict[str, np.ndarray]:
        return {n: np.zeros(shape, np.float32) for n, shape in self.shapes.items()}
