"""Heads that read the whole sequence: pool the topology's per-step outputs into one vector.

``last`` (the output after each sequence's last step) needs no module. ``mean`` and ``max`` can
run step by step: they keep running statistics as one extra state, ``pool`` [batch, 2, size]
(slot 0: the running mean or maximum, slot 1: the count of steps seen, in every column), so the
step graph's prediction after step t equals the sequence graph's on the first t steps, and a
zero state is the right start whatever the initial-state rule. The state holds the mean, not the
sum: a sum grows with the sequence and so does the rounding torch and onnxruntime disagree by,
while a mean stays the size of one output. ``attention`` (a learned score per
step, softmax over the sequence's valid steps, the weighted sum) needs every step's score before
any weight is known, so it has a sequence graph only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

POOLINGS = ("last", "mean", "max", "attention")
STREAMING = ("last", "mean", "max")
POOL_STATE = "pool"  # the running statistics' state name, after the topology's states


def valid_steps(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """[B, T, 1] bool: step t of row b is within its length."""
    return (torch.arange(time, device=lengths.device)[None, :] < lengths[:, None].to(torch.int64))[..., None]


class Pooling(nn.Module):
    """``mean``, ``max`` or ``attention`` over a [B, T, size] output sequence."""

    def __init__(self, kind: str, size: int) -> None:
        super().__init__()
        if kind not in POOLINGS or kind == "last":
            raise ValueError(f"pooling {kind!r}: expected one of {POOLINGS[1:]}")
        self.kind, self.size = kind, size
        if kind == "attention":
            self.score = nn.Linear(size, 1)

    @property
    def has_state(self) -> bool:
        return self.kind in ("mean", "max")

    def whole(
        self, outputs: torch.Tensor, lengths: torch.Tensor, pool: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each sequence's pooled vector [B, size], and the running statistics after its last step
        (continuing from ``pool`` when given)."""
        mask = valid_steps(lengths, outputs.shape[1])
        if self.kind == "attention":
            scores = self.score(outputs).masked_fill(~mask, float("-inf"))  # [B, T, 1]
            return (torch.softmax(scores, dim=1) * outputs).sum(dim=1), None
        count = lengths.to(outputs.dtype)[:, None].expand(-1, self.size)
        if self.kind == "mean":
            total = (outputs * mask).sum(dim=1)
            if pool is not None:
                total, count = total + pool[:, 0] * pool[:, 1], count + pool[:, 1]
            mean = total / count
            return mean, torch.stack([mean, count], dim=1)
        value = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
        if pool is not None:
            value = torch.where(pool[:, 1] > 0, torch.maximum(pool[:, 0], value), value)
            count = count + pool[:, 1]
        return value, torch.stack([value, count], dim=1)

    def running(self, outputs: torch.Tensor, pool: torch.Tensor | None) -> torch.Tensor:
        """The pooled vector after every step [B, T, size] (what the step graph yields step by step)."""
        if self.kind == "attention":
            raise ValueError("attention pooling weighs every step by the whole sequence; it has no step-by-step form")
        time = outputs.shape[1]
        seen = torch.arange(1, time + 1, dtype=outputs.dtype, device=outputs.device)[None, :, None]
        if self.kind == "mean":
            total = outputs.cumsum(dim=1)
            if pool is not None:
                total, seen = total + (pool[:, 0] * pool[:, 1])[:, None], seen + pool[:, None, 1]
            return total / seen
        value = outputs.cummax(dim=1).values
        if pool is not None:
            value = torch.where(pool[:, None, 1] > 0, torch.maximum(pool[:, None, 0], value), value)
        return value

    def step(self, h: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: the output ``h`` [B, size] joins the running statistics; (pooled [B, size], new ``pool``)."""
        count = pool[:, 1] + 1
        if self.kind == "mean":
            mean = pool[:, 0] + (h - pool[:, 0]) / count
            return mean, torch.stack([mean, count], dim=1)
        value = torch.where(pool[:, 1] > 0, torch.maximum(pool[:, 0], h), h)
        return value, torch.stack([value, count], dim=1)


class PooledInitialState(nn.Module):
    """The model's initial-state module with the running statistics' zero state after it, so the
    exports (served values, the rule in the metadata) describe the ``pool`` state like any other."""

    def __init__(self, inner: Any, size: int) -> None:  # an initial-state module (see StepModel.initial)
        super().__init__()
        self.inner: Any = inner
        self.size = size
        self.shapes = {**inner.shapes, POOL_STATE: (2, size)}
        self.state_names = (*inner.state_names, POOL_STATE)

    def forward(self, batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        return (*self.inner(batch, device), torch.zeros(batch, 2, self.size, device=device))

    def spec(self) -> dict[str, Any]:
        spec = dict(self.inner.spec())
        if "values" in spec:  # learnable: every state's first value is listed, the pool's zeros too
            spec["values"] = {**spec["values"], POOL_STATE: np.zeros((2, self.size)).tolist()}
        spec["pool"] = f"state '{POOL_STATE}' holds the pooling's running statistics and starts from zeros"
        return spec

    def served_values(self) -> dict[str, np.ndarray]:
        return {**self.inner.served_values(), POOL_STATE: np.zeros((2, self.size), np.float32)}
