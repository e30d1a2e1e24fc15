"""The cell, topology and task contracts: everything the engine calls on a plugin, declared here.

A plugin (built-in or not) subclasses :class:`Cell`, :class:`Topology` or :class:`Task`. Each is
an abstract base class: the methods a plugin must write are abstract, the optional ones have
defaults that say what the engine does without them. The engine learns what it needs from these
declarations — never from ``isinstance`` on a built-in class, never by probing with ``hasattr``.

Shapes: ``B`` batch, ``T`` time, ``I`` input size, ``H`` hidden size, ``S`` state slots
(layers × directions). A *state* is a tuple of tensors in ``state_names`` order; each state has
its own size (a projected LSTM's ``h`` is smaller than its ``c``).
"""

from __future__ import annotations

from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

if TYPE_CHECKING:
    import onnx

State = tuple[torch.Tensor, ...]


class NoOptions(BaseModel):
    """A plugin that takes no options still rejects unknown ones."""

    model_config = ConfigDict(extra="forbid")


def declaration_holds(cls: type, declaration: str, computations: Iterable[str]) -> bool:
    """Whether ``cls``'s ``declaration`` (e.g. a cell's ``onnx_operator``) still describes its computation.

    A declaration made by a class describes the computation of that class. A subclass that overrides
    one of ``computations`` (``forward``, ``step``, …) without re-declaring has changed what the
    declaration describes, so it no longer holds: the engine then exports the computation itself
    (traced, or a Loop), never a native graph of the parent's computation.
    """
    mro = cls.__mro__
    declared_at = next((i for i, k in enumerate(mro) if declaration in vars(k)), None)
    if declared_at is None:
        return False
    for name in computations:
        computed_at = next((i for i, k in enumerate(mro) if name in vars(k)), len(mro))
        if computed_at < declared_at:
            return False
    return True


def masked_steps(
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    x: torch.Tensor,
    lengths: torch.Tensor,
    state: State,
) -> tuple[torch.Tensor, State]:
    """The one masked step loop: ``step(x_t, state) -> (y_t, state)`` over a padded batch ``x`` [B, T, …].

    Sequences whose length has passed keep their state, and their ``y`` is zero from then on, so
    padding never changes a result. Returns ``y`` at every step [B, T, …] and the final state.
    """
    outputs = []
    lengths = lengths.to(x.device)
    for t in range(x.shape[1]):
        y, new_state = step(x[:, t], state)
        alive = t < lengths  # [B]
        state = tuple(
            torch.where(alive.view(-1, *[1] * (old.dim() - 1)), new, old) for new, old in zip(new_state, state)
        )
        outputs.append(torch.where(alive.view(-1, *[1] * (y.dim() - 1)), y, torch.zeros_like(y)))
    return torch.stack(outputs, dim=1), state


# -- cells ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxOperator:
    """How a cell maps onto ONNX's native ``RNN``, ``GRU`` or ``LSTM`` operator, for one direction.

    ``W`` [G·H, I], ``R`` [G·H, H] and ``B`` [2·G·H] are the cell's weights in that operator's gate
    order (LSTM: i, o, f, c; GRU: z, r, h), ``attributes`` the operator's own (``activations``,
    ``linear_before_reset``, …; ``hidden_size`` and ``direction`` are set by the engine).
    """

    op_type: Literal["RNN", "GRU", "LSTM"]
    W: np.ndarray
    R: np.ndarray
    B: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)


class Cell(nn.Module, metaclass=ABCMeta):
    """One recurrence ``h_t = f_W(h_{t-1}, x_t)``, built as ``Cell(input_size, hidden_size, **options)``.

    Inputs: ``x_t`` [B, I], ``state`` a tuple in ``state_names`` order, state ``k`` [B, state_sizes[k]].
    Outputs: the new state, same structure; the cell's output is ``state[0]`` ([B, output_size]).
    """

    # names of the state tensors, output first (vanilla/GRU: ("h",); LSTM: ("h", "c"))
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    # the options' pydantic model, validated from [model.cell_options]; a validator may read the
    # model sizes from ``info.context`` ({"hidden_size": …}) to refuse bad combinations at `seqpipe check`
    Options: ClassVar[type[BaseModel]] = NoOptions
    # options the parity matrices build this cell with (a cell with a required option declares one)
    example_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, input_size: int, hidden_size: int, **options: Any) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """Each state's size, in ``state_names`` order; by default every state is ``hidden_size`` wide."""
        return (self.hidden_size,) * len(self.state_names)

    @property
    def output_size(self) -> int:
        """The width of the cell's output, ``state[0]``: what the next layer and the head read."""
        return self.state_sizes[0]

    @abstractmethod
    def forward(self, x_t: torch.Tensor, state: State) -> State:
        """Advance one time step: ``x_t`` [B, I], ``state`` → the new state."""

    def forward_sequence(self, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run a padded batch: ``x`` [B, T, I], ``lengths`` [B] → outputs [B, T, output_size], final state.

        Positions at or past a sequence's length give zero outputs and leave its state untouched,
        so padding never changes a result. Cells with a fused kernel override this; the override
        must agree with this step loop (``seqpipe.testing.check_cell`` checks it).
        """
        return masked_step_loop(self, x, lengths, state)

    def onnx_operator(self) -> OnnxOperator | None:
        """The native ONNX operator this cell is, with its weights in that operator's layout; None
        (the default) when it has none, and the engine exports the cell itself inside ONNX Loops.

        Holds only for the class that declares it: a subclass overriding ``forward`` or
        ``forward_sequence`` without re-declaring is exported as its own computation.
        """
        return None


def masked_step_loop(cell: Cell, x: torch.Tensor, lengths: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """The reference sequence path of a cell: :func:`masked_steps` over its one-step call."""

    def step(x_t: torch.Tensor, s: State) -> tuple[torch.Tensor, State]:
        new = cell(x_t, s)
        return new[0], new

    return masked_steps(step, x, lengths, state)


def native_operator(cell: Cell) -> OnnxOperator | None:
    """The cell's native operator when its declaration still holds (see :func:`declaration_holds`)."""
    if not declaration_holds(type(cell), "onnx_operator", ("forward", "forward_sequence")):
        return None
    operator = cell.onnx_operator()
    # an ONNX RNN/GRU/LSTM node has one hidden size for every state: a cell whose states differ runs in Loops
    if operator is not None and any(size != operator.R.shape[1] for size in cell.state_sizes):
        return None
    return operator


# -- topologies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """What a topology is made of, for the engine's ONNX graphs: per layer, its cells (one, or a
    forward and a backward one), layer ``l+1`` reading layer ``l``'s merged outputs; state slots in
    order ``[layer0 dir0, layer0 dir1, layer1 dir0, …]``; ``merge`` joins two directions' outputs."""

    cells: list[tuple[Cell, ...]]
    merge: Literal["concat", "sum"] = "concat"


class Topology(nn.Module, metaclass=ABCMeta):
    """How cells are wired, built as ``Topology(cell_cls, input_size, hidden_size, cell_options, **options)``.

    A constructor sets ``input_size``, ``hidden_size``, ``num_slots``, ``output_size``,
    ``state_names`` and ``state_sizes`` (see the attribute comments). States are batch-first, state ``k`` is
    [B, num_slots, state_sizes[k]].
    """

    # False when outputs depend on later inputs (bidirectional): no step, no step graph, no streaming
    causal: ClassVar[bool] = True
    Options: ClassVar[type[BaseModel]] = NoOptions
    num_slots: int  # state slots: layers × directions
    output_size: int  # width of the outputs [B, T, output_size] and of step's y
    state_names: tuple[str, ...]  # the cells' state names
    state_sizes: tuple[int, ...]  # each state's size, in state_names order (the cells' state_sizes)
    input_size: int  # features per step it reads
    hidden_size: int  # the [model] hidden_size it was built with

    @abstractmethod
    def forward(self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Run a padded batch: ``x`` [B, T, I], ``lengths`` [B] → outputs [B, T, output_size] (zero
        past each length), final state; ``state`` None starts from :meth:`zero_state`."""

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Advance every layer one step (causal topologies): ``x_t`` [B, I] → (y [B, output_size], state)."""
        from seqpipe.errors import ExportError

        raise ExportError(
            f"topology '{type(self).__name__}' is not causal: it reads the future, so it cannot be stepped or "
            "streamed; use a sequence graph, or a causal topology ('single'/'stacked') for streaming."
        )

    def final_output(self, outputs: torch.Tensor, lengths: torch.Tensor, state: State) -> torch.Tensor:
        """The output summarising each whole sequence, [B, output_size]: by default the last valid step's."""
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths.to(outputs.device) - 1]

    @property
    def state_shapes(self) -> dict[str, tuple[int, int]]:
        """Each state's shape after the batch axis, ``(num_slots, size)``: the one place that spells it."""
        return {name: (self.num_slots, size) for name, size in zip(self.state_names, self.state_sizes)}

    def zero_state(self, batch: int, device: torch.device | None = None) -> State:
        return tuple(torch.zeros(batch, *shape, device=device) for shape in self.state_shapes.values())

    def layers(self) -> Layers | None:
        """The topology's layers, when it is a stack of (uni- or bidirectional) cell layers: the engine
        then builds its sequence graph (and step graph) from native operators or Loops over each cell.
        None (the default): a causal topology's sequence graph is a Loop around its traced step graph.

        Holds only for the class that declares it: a subclass overriding ``forward``, ``step`` or
        ``final_output`` without re-declaring is exported as its own computation.
        """
        return None


def declared_layers(topology: Topology) -> Layers | None:
    """The topology's layers when its declaration still holds (see :func:`declaration_holds`)."""
    return topology.layers() if declares_layers(type(topology)) else None


def declares_layers(topology_cls: type) -> bool:
    """Whether a topology class declares layers that describe its own computation (class level, so
    ``seqpipe check`` can decide which graphs a pipeline can have before building anything)."""
    declared_by = next(k for k in topology_cls.__mro__ if "layers" in vars(k))
    return declared_by is not Topology and declaration_holds(
        topology_cls, "layers", ("forward", "step", "final_output")
    )


# -- the model a task builds ------------------------------------------------------------------------


class StepModel(nn.Module, metaclass=ABCMeta):
    """A task's whole network (input encoding ∘ topology ∘ head) as the engine sees it.

    ``step(x_t, state) -> (y_t, state)`` is what the ONNX step graph exports;
    ``run_sequence(x, lengths) -> (y [B,T,…], final state)`` is the fast whole-sequence path that
    parity compares against. ``y`` at padded positions is unspecified. ``body`` is the topology
    (the engine reads causality, layers and state shapes from it); ``initial`` the initial-state
    module (see :mod:`seqpipe.initial_state`).
    """

    body: Topology
    # an nn.Module called as ``initial(batch, device) -> State`` that also describes itself for the
    # exports (``spec()``, ``served_values()``, ``state_names``, ``shapes``); typed loosely because
    # torch types a module's attributes as tensors or modules
    initial: Any

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.body.state_names

    @property
    def num_slots(self) -> int:
        return self.body.num_slots

    @property
    def hidden_size(self) -> int:
        return self.body.hidden_size

    @property
    def state_shapes(self) -> dict[str, tuple[int, int]]:
        return self.body.state_shapes

    @property
    def streams(self) -> bool:
        """Whether :meth:`step` reproduces the model step by step (on a causal topology); False for a
        head that needs the whole sequence first (attention pooling): no step graph, and a
        sequence graph only from the topology's declared layers."""
        return True

    @abstractmethod
    def initial_state(self, batch: int) -> State:
        """The state every sequence starts from, [B, slots, size] per state."""

    @abstractmethod
    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One time step of the whole network: what the step graph exports."""

    @abstractmethod
    def run_sequence(
        self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """``y`` at every step [B, T, …] and the final state, by the fast whole-sequence path."""

    @abstractmethod
    def sequence_output(
        self, x: torch.Tensor, lengths: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """What the sequence graph returns: ``y`` for each whole sequence (or every step), and the final state."""


# -- tasks ------------------------------------------------------------------------------------------


class Batch(Protocol):
    """What the trainer needs of a task's batch: its targets (one row per example, for counting).
    A dataclass batch may also carry length fields — ``lengths``, or names ending in ``_lengths``
    (int64 [B], each sequence padded to the batch's longest) — from which the run log reports the
    padding share; its tensor fields move to the training device."""

    targets: torch.Tensor


class Task(ABC):
    """What the network is for; owns data encoding, head, loss, metrics and export inputs.

    Built as ``Task(options, data)`` where ``data`` is a :class:`seqpipe.data.DataSource`: read
    its splits with ``data.splits(read)`` (given files, or cuts of one file), and count whatever
    reading skips or cuts short with ``data.account.add(...)``: the engine reports it. ``data.input``
    (and ``data.output``) is the pipeline's :class:`seqpipe.inputs.InputEncoding`, unfitted: the task
    reads its column with it, fits it on the training split and encodes every split.
    The engine then calls, in order: :meth:`prepare` (read and encode data, fit vocabularies),
    :meth:`build_model`, :meth:`batches` and :meth:`loss` while training, :meth:`evaluate` per
    split, then for export :meth:`step_example`, :meth:`parity_inputs`, :meth:`encoding_spec`
    (and :meth:`sequence_graph` / :meth:`export_graph` for the graphs it builds itself), and last
    :meth:`write_report`.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    monitor: ClassVar[str] = "loss"  # validation metric that picks the best epoch ([training] monitor overrides it)
    monitor_mode: ClassVar[Literal["min", "max"]] = "min"
    # every validation metric a user may choose as [training] monitor, with its direction
    metric_modes: ClassVar[dict[str, Literal["min", "max"]]] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    # what the sequence graph's ``y`` is: "final" (after each sequence's last step) or "per_step"
    sequence_y: ClassVar[Literal["final", "per_step"]] = "final"
    # graphs exported through the engine's step/sequence machinery by default; None: every one the
    # model has (step when causal, sequence when a native or Loop form exists); (): only its own
    default_graphs: ClassVar[tuple[str, ...] | None] = None
    # graphs the task writes itself with :meth:`export_graph` (an init graph for a conditioned
    # state, a seq2seq encoder and decoder), after the engine's graphs
    extra_graphs: ClassVar[tuple[str, ...]] = ()
    # True when the task's decoding steps the model (generation, decoders): a non-causal topology is refused
    needs_causal: ClassVar[bool] = False
    # True when the task exports its encoder from the topology's declared layers (seq2seq)
    needs_sequence_encoder: ClassVar[bool] = False
    # initial-state rules the task accepts in [model] initial_state
    initial_states: ClassVar[tuple[str, ...]] = ("zeros", "random", "learnable")
    # the input encoding ([input] kind) of a pipeline that names none; None: the task reads no
    # [input] table (it encodes its own columns, as forecast does)
    default_input: ClassVar[str | None] = "characters"
    # the column the input encoding reads when [input] column names none
    input_column: ClassVar[str] = "text"
    # what the input column may hold: encodings that read "text", "numbers", or both
    input_reads: ClassVar[tuple[str, ...]] = ("text", "numbers")
    # True when every given token must stay one step (a tagger's labels are per token): encodings
    # that split a token into several steps (subwords) are refused at `seqpipe check`
    needs_token_aligned_input: ClassVar[bool] = False
    # True when the task's model reads steps of a word id and its characters' ids (input.characters),
    # through seqpipe.models.input_layer, pad_inputs and step_input; other tasks refuse them at check
    reads_word_characters: ClassVar[bool] = False
    # the output encoding ([output] kind) of a task that writes tokens; None: no [output] table
    default_output: ClassVar[str | None] = None
    output_column: ClassVar[str] = "target"
    # baselines among the test metrics (``<baseline>_<metric>``) that only set a floor (the most
    # frequent label, persistence): a run that beats them alone is not said to beat every baseline
    trivial_baselines: ClassVar[tuple[str, ...]] = ()
    # arguments for `seqpipe predict RUN …`, shown after a run
    predict_example: ClassVar[str] = '"some text"'
    # the tables of a small pipeline for this task on data a plugin registers, e.g.
    # {"data": {"dataset": "spam-assassin"}, "task": {"options": {...}}}: seqpipe's parity matrix
    # exports every registered cell × topology for the task on it (None: not covered)
    example_pipeline: ClassVar[dict[str, Any] | None] = None

    # encoded examples per split, filled by prepare(); the trainer counts len(examples["train"]) and
    # the default batches() batches them
    examples: dict[str, Sequence[Any]]

    def __init__(self, options: BaseModel, data: Any) -> None:
        self.options = options
        self.data = data
        self.examples = {}

    # -- data ---------------------------------------------------------------------------------
    @classmethod
    def no_step_graph(cls, options: BaseModel) -> str | None:
        """Why this task, with these options, has no step graph even on a causal topology (a head
        that needs the whole sequence first), or None. Asked at ``check``, before any data is read."""
        return None

    @classmethod
    def declared_metrics(cls) -> dict[str, Literal["min", "max"]]:
        """Every validation metric the task can report, with its direction (what `check` validates
        ``[training] monitor`` against before any data is read)."""
        return {**cls.metric_modes, cls.monitor: cls.monitor_mode, "loss": "min"}

    def metric_names(self) -> dict[str, Literal["min", "max"]]:
        """The validation metrics this task reports on its data, with their directions (after
        :meth:`prepare`; a task may narrow them to what the data allows)."""
        return {**self.declared_metrics(), self.monitor: self.monitor_mode}

    def notes(self) -> list[str]:
        """One line each for what the task chose from the data rather than from its options (after
        :meth:`prepare`), printed by `check` and `run`: e.g. a forecaster that models changes
        because the training part trends. Default: none."""
        return []

    def validation_label_counts(self) -> dict[str, int] | None:
        """For a task that predicts one label per example: how many validation examples each label
        has (after :meth:`prepare`). With a label under 5, or a validation split under 50 examples,
        the best epoch is picked by validation loss unless ``[training] monitor`` says otherwise
        (:mod:`seqpipe.selection`). None (the default): the task's metric picks it whatever the size."""
        return None

    @abstractmethod
    def prepare(self) -> dict[str, int]:
        """Read and encode the data, fit vocabularies and scalers; return examples per split.
        Bad data raises :class:`seqpipe.errors.DataError` here, before a run directory exists."""

    # -- batches: by default the examples prepare() left in self.examples, through collate() -------
    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        bucket: bool = False,
    ) -> Iterator[Batch]:
        """The split's examples as batches (shuffled with ``generator`` while training). ``bucket``
        (``[training] bucket``, only while shuffling): batch examples of similar length together,
        order still random. By default: ``self.examples[split]`` (a list :meth:`prepare` fills) in
        chunks of ``batch_size`` through :meth:`collate`, bucketed by :meth:`example_length`
        (:func:`seqpipe.batching.batched`). A task that overrides this without the ``bucket``
        keyword is refused at ``check`` when it is asked for."""
        from seqpipe.batching import batched

        return batched(
            self.examples[split],
            batch_size,
            self.collate,
            shuffle=shuffle,
            generator=generator,
            bucket=bucket,
            length=self.example_length,
        )

    def collate(self, examples: list[Any]) -> Batch:
        """One batch from a list of examples, for the default :meth:`batches`."""
        raise NotImplementedError(
            f"{type(self).__name__} uses the default batches(): write collate(examples) -> batch, or batches() itself"
        )

    def example_length(self, example: Any) -> int:
        """An example's steps, to bucket by: by default ``len(example[0])``, its input sequence's."""
        return len(example[0])

    # -- model --------------------------------------------------------------------------------
    @abstractmethod
    def build_model(
        self, make_topology: Callable[[int], Topology], initial_state: str = "zeros", initial_state_scale: float = 0.1
    ) -> nn.Module:
        """The whole network; ``make_topology(input_size)`` builds the pipeline's topology. A
        :class:`StepModel` when the engine exports its step or sequence graphs; a task that exports
        only its own graphs (``default_graphs = ()``) may return any module with a ``body`` topology."""

    @abstractmethod
    def loss(self, model: StepModel, batch: Batch) -> torch.Tensor:
        """The training loss of one batch (a scalar)."""

    @abstractmethod
    def evaluate(self, model: StepModel, split: str) -> dict[str, float]:
        """Metrics on a split; must include ``loss`` and the :attr:`monitor` metric."""

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        """An example step input ``x_t`` [batch, …] (token ids or features) for tracing the step graph.
        Required when the engine exports the task's step or sequence graph (:attr:`default_graphs` not ``()``)."""
        raise _not_implemented(self, "step_example")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` padded sequences of a split, ``(x [N, T, …], lengths [N])``, for parity checks.
        Required when the engine exports the task's step or sequence graph (:attr:`default_graphs` not ``()``)."""
        raise _not_implemented(self, "parity_inputs")

    @abstractmethod
    def encoding_spec(self) -> dict[str, Any]:
        """How inputs and outputs are encoded (vocabulary, labels, scaling): stored in every graph's
        metadata so a program with only the ONNX file can encode and decode. ``input`` has ``dtype``
        (and ``features`` for numeric inputs); ``output`` has ``labels`` or ``size``."""

    def sequence_graph(self, model: StepModel, opset: int) -> onnx.ModelProto | None:
        """The sequence graph built from the topology's declared layers (used when every cell has a
        native operator, or the topology is not causal). None (the default): the engine builds its
        generic one for a :class:`seqpipe.models.SequenceModel` (``y`` sized from
        :meth:`encoding_spec`); a task whose model is not one overrides this."""
        return None

    def export_graph(
        self,
        kind: str,
        model: StepModel,
        path: Path,
        *,
        resolved: Any,
        opset: int,
        exporter: str,
        tolerance: float,
        limit: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Write one of :attr:`extra_graphs` to ``path`` and check it; return (its spec, its parity report)."""
        raise _not_implemented(self, "export_graph", f"it lists graph '{kind}' in extra_graphs")

    def evaluate_onnx(self, runner: Any, split: str) -> dict[str, float] | None:
        """Metrics of an exported graph (any precision) on a split, via onnxruntime; None: not measured."""
        return None

    def parity_start(self, model: StepModel, split: str, limit: int) -> dict[str, np.ndarray] | None:
        """Where each of the first ``limit`` parity sequences starts, per state name [N, slots, size]
        (numpy), when the task computes it per sequence (a conditioned state); None: the initial state."""
        return None

    def write_report(self, model: StepModel, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
        """Task-specific results after export (plots, samples); a returned dict is merged into metrics.json."""
        return None


def _not_implemented(task: Task, method: str, why: str = "the engine exports its step or sequence graph") -> Exception:
    from seqpipe.errors import ExportError

    return ExportError(
        f"task '{type(task).__name__}' does not implement Task.{method}, which it needs because {why}; "
        f"implement it, or set default_graphs = () and export the task's own graphs."
    )
