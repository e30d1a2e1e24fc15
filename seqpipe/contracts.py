"""The cell, topology and task contracts (see DESIGN.md) as base classes.

Shapes: ``B`` batch, ``T`` time, ``I`` input size, ``H`` hidden size, ``S`` state slots
(layers × directions). A *state* is a tuple of tensors in ``state_names`` order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

State = tuple[torch.Tensor, ...]


class NoOptions(BaseModel):
    """A plugin that takes no options still rejects unknown ones."""

    model_config = ConfigDict(extra="forbid")


class Cell(nn.Module):
    """One recurrence ``h_t = f_W(h_{t-1}, x_t)``, built as ``Cell(input_size, hidden_size, **options)``.

    Inputs: ``x_t`` [B, I], ``state`` tuple of [B, H] in ``state_names`` order.
    Outputs: the new state, same structure; the cell's output is ``state[0]``.
    """

    state_names: ClassVar[tuple[str, ...]] = ("h",)
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, input_size: int, hidden_size: int, **options: Any) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def forward(self, x_t: torch.Tensor, state: State) -> State:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.forward(x_t, state) is not implemented")

    def forward_sequence(self, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run a padded batch: ``x`` [B, T, I], ``lengths`` [B] → outputs [B, T, H], final state.

        Positions at or past a sequence's length give zero outputs and leave its state untouched,
        so padding never changes a result. Cells with a fused kernel override this; the override
        must agree with this step loop.
        """
        return masked_step_loop(self, x, lengths, state)


def masked_step_loop(cell: Cell, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """The reference sequence path: call the cell once per step, freezing finished sequences."""
    outputs = []
    lengths = lengths.to(x.device)
    for t in range(x.shape[1]):
        new_state = cell(x[:, t], state)
        alive = (t < lengths).unsqueeze(1)  # [B, 1]
        state = tuple(torch.where(alive, new, old) for new, old in zip(new_state, state))
        outputs.append(torch.where(alive, new_state[0], torch.zeros_like(new_state[0])))
    return torch.stack(outputs, dim=1), state


class Topology(nn.Module):
    """How cells are wired, built as ``Topology(cell_cls, input_size, hidden_size, cell_options, **options)``.

    ``forward(x [B,T,I], lengths [B], state) -> (outputs [B,T,output_size], final state)`` with
    states batch-first ``[B, num_slots, H]``. A causal topology also offers
    ``step(x_t [B,I], state) -> (y_t [B,output_size], state)`` advancing every layer one step.
    """

    causal: ClassVar[bool] = True
    Options: ClassVar[type[BaseModel]] = NoOptions
    num_slots: int
    output_size: int
    state_names: tuple[str, ...]
    hidden_size: int

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:  # pragma: no cover - abstract
        raise NotImplementedError

    def final_output(self, outputs: torch.Tensor, lengths: torch.Tensor, state: State) -> torch.Tensor:
        """The output summarising each whole sequence, [B, output_size]: by default the last valid step's."""
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths.to(outputs.device) - 1]

    def zero_state(self, batch: int, device: torch.device | None = None) -> State:
        return tuple(torch.zeros(batch, self.num_slots, self.hidden_size, device=device) for _ in self.state_names)


class StepModel(nn.Module):
    """A task's whole network (input encoding ∘ topology ∘ head) as the engine sees it.

    ``step(x_t, state) -> (y_t, state)`` is what the ONNX step graph exports;
    ``run_sequence(x, lengths) -> (y [B,T,…], final state)`` is the fast whole-sequence path that
    parity compares against. ``y`` at padded positions is unspecified.
    """

    state_names: tuple[str, ...]
    num_slots: int
    hidden_size: int

    def initial_state(self, batch: int) -> State:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_sequence(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def sequence_output(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:  # pragma: no cover
        """What the sequence graph returns: ``y`` for each whole sequence, and the final state."""
        raise NotImplementedError


class Task:
    """What the network is for; owns data encoding, head, loss, metrics and export inputs.

    Built as ``Task(options, data)`` where ``data`` is a :class:`seqpipe.assembly.DataSource`.
    The engine then calls, in order: ``prepare()`` (read and encode data, fit vocabularies),
    ``build_model(make_topology)``, ``batches``/``loss`` while training, ``evaluate`` per split,
    and ``parity_inputs``/``encoding_spec``/``step_example`` for export.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    monitor: ClassVar[str] = "loss"  # validation metric that picks the best epoch
    monitor_mode: ClassVar[str] = "min"  # "min" or "max"
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    # what the sequence graph's ``y`` is: "final" (after each sequence's last step) or "per_step"
    sequence_y: ClassVar[str] = "final"
    # graphs exported through the engine's step/sequence machinery by default; None: every one the
    # model has (step when causal, sequence when a native or Loop form exists)
    default_graphs: ClassVar[tuple[str, ...] | None] = None
    # graphs the task writes itself with ``export_graph(kind, model, path, opset)`` (e.g. an init
    # graph for a conditioned state, or a seq2seq encoder and decoder), after the engine's graphs
    extra_graphs: ClassVar[tuple[str, ...]] = ()
    # True when the task's decoding steps the model (generation): a non-causal topology is refused
    needs_causal: ClassVar[bool] = False
    # initial-state rules the task accepts in [model] initial_state
    initial_states: ClassVar[tuple[str, ...]] = ("zeros", "random", "learnable")
    # arguments for `seqpipe predict RUN …`, shown after a run
    predict_example: ClassVar[str] = '"some text"'
    # the tables of a small pipeline for this task on data a plugin registers, e.g.
    # {"data": {"dataset": "spam-assassin"}, "task": {"options": {...}}}: seqpipe's parity matrix
    # exports every registered cell × topology for the task on it, so a task joins the matrix by
    # declaring one (None: the matrix lists the task as not covered)
    example_pipeline: ClassVar[dict[str, Any] | None] = None

    def parity_start(self, model: StepModel, split: str, limit: int) -> dict[str, Any] | None:
        """Where each of the first ``limit`` parity sequences starts, per state name [N, slots, hidden]
        (numpy), when the task computes it per sequence (a conditioned state); None: the initial state."""
        return None

    def write_report(self, model: StepModel, run_dir: Any, log: Any) -> dict[str, Any] | None:
        """Task-specific results after export (plots, samples); a returned dict is merged into metrics.json."""
        return None
