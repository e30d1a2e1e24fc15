"""Every hook a seqpipe plugin can implement.

Registration hooks receive a ``register`` callback: the core, not hook call order, owns names,
duplicates and "did you mean" (see :mod:`seqpipe.registry`). Hooks fire once per plugin manager,
when :func:`seqpipe.registry.build_registry` runs, i.e. at the start of every command that needs
plugins. Training loads the ``seqpipe`` entry-point group, serving (``seqpipe predict``) the
torch-free ``seqpipe.serving`` group, which is where ``register_predictors`` belongs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from seqpipe.registry import Register

hookspec = pluggy.HookspecMarker("seqpipe")


@hookspec
def register_cells(register: Register) -> None:
    """Register recurrent cells: ``register("name", CellClass)``.

    ``CellClass(input_size, hidden_size, **options)`` must follow the cell contract of
    :class:`seqpipe.contracts.Cell`; its options are declared by ``CellClass.Options`` (a pydantic
    model) and validated from the pipeline's ``[model.cell_options]`` table.
    """


@hookspec
def register_topologies(register: Register) -> None:
    """Register topologies (how cells are wired): ``register("name", TopologyClass)``.

    See :class:`seqpipe.contracts.Topology`; options come from ``[model.topology_options]``.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks (what the network is for): ``register("name", TaskClass)``.

    See :class:`seqpipe.contracts.Task`; options come from ``[task.options]``.
    """


@hookspec
def register_encodings(register: Register) -> None:
    """Register input encodings (how a data column becomes a sequence): ``register("name", EncodingClass)``.

    ``EncodingClass(options)`` subclasses :class:`seqpipe.inputs.InputEncoding`; its options are
    declared by ``EncodingClass.Options`` and validated from the pipeline's ``[input]`` (or
    ``[output]``) table. Encodings are torch-free and rebuilt from an export's metadata when
    serving, so the module that implements this hook belongs to both entry-point groups,
    ``seqpipe`` and ``seqpipe.serving``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets shipped inside a package:
    ``register("name", seqpipe.registry.Dataset(path, format, description))``.

    A pipeline names one with ``[data] dataset = "name"`` instead of ``path``.
    """


@hookspec
def register_predictors(register: Register) -> None:
    """Register how a task serves predictions: ``register("task-name", PredictorClass)``.

    ``PredictorClass`` subclasses :class:`seqpipe.predictor.Predictor` (its options, a usage
    line and ``predict(path, inputs, options)``). It is loaded from the ``seqpipe.serving``
    entry-point group, without torch: the module that implements this hook must not import torch.
    """
