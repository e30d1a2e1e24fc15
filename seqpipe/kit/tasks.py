"""check_task: the task contract (:class:`seqpipe.contracts.Task`), trained, evaluated and exported
through the engine on the task's example pipeline; and the pipeline files the checks write."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqpipe.kit.common import _check_no_clash, _validated, fresh_registry

if TYPE_CHECKING:
    from seqpipe.registry import Registry


# -- tasks ------------------------------------------------------------------------------------------


def check_task(
    task_cls: type[Any],
    *,
    registry: Registry | None = None,
    cell: str = "gru",
    topology: str = "single",
    hidden_size: int = 8,
    train_steps: int = 2,
    batch_size: int = 16,
    parity_sequences: int = 8,
    holdout_fraction: float | None = 0.03,
    evaluate_splits: Sequence[str] = ("validation",),
    workdir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Assert that ``task_cls`` follows the task contract of :class:`seqpipe.contracts.Task`, on its
    ``example_pipeline`` with the registry's ``cell`` and ``topology`` (names) and a tiny model.

    Declarations: it subclasses ``Task``; ``monitor_mode``, ``sequence_y``, ``splits`` and
    ``initial_states`` are valid; it declares ``example_pipeline``, whose task options its
    ``Options`` accept.

    The engine's sequence, on that pipeline (written to a TOML file, ``[export] parity_sequences``
    small; ``[data]`` validation and test fractions ``holdout_fraction`` unless the example sets them,
    so an untrained model's evaluation is quick; None keeps the defaults): it resolves through
    ``seqpipe.assembly.resolve_pipeline`` (``registry`` default: a fresh
    one; a task the registry lacks is added to a copy under its qualified name); ``prepare()`` returns
    the number of examples of each split in ``splits``, some to train on; ``build_model`` gives a
    module whose ``body`` is a ``Topology``, a ``StepModel`` when the engine exports its step or
    sequence graph; ``train_steps`` optimizer steps on shuffled
    training batches each give a finite scalar loss with finite gradients, not all zero;
    ``evaluate`` gives finite ``loss`` and ``monitor`` on each of ``evaluate_splits`` (default: the
    split the trainer evaluates every epoch); every graph the run would write
    (``resolved.graphs``, the task's own included) is exported and passes parity in
    ``seqpipe.exports.export_graphs``. Files go to ``workdir`` (default: a temporary directory).

    Returns what it saw: ``graphs``, ``counts``, ``losses``, ``metrics``, ``parity``.
    """
    from seqpipe.contracts import Task

    name = task_cls.__name__
    assert isinstance(task_cls, type) and issubclass(task_cls, Task), f"{name} must subclass seqpipe.contracts.Task"
    _check_no_clash(task_cls, Task)
    _check_task_declarations(task_cls, hidden_size)
    registry, task_name = _registry_with(task_cls, registry if registry is not None else fresh_registry())
    cell_cls = registry.get("cell", cell, "check_task(cell=...)").obj
    tables = pipeline_tables(
        task_cls,
        task_name,
        cell=cell,
        topology=topology,
        hidden_size=hidden_size,
        cell_options=cell_cls.example_options,
        parity_sequences=parity_sequences,
        batch_size=batch_size,
        holdout_fraction=holdout_fraction,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run_task_contract(task_cls, registry, tables, root, train_steps, list(evaluate_splits), seed)


def _check_task_declarations(task_cls: type[Any], hidden_size: int) -> None:
    name = task_cls.__name__
    assert task_cls.monitor_mode in ("min", "max"), (
        f"{name}.monitor_mode must be 'min' or 'max', found {task_cls.monitor_mode!r}"
    )
    assert task_cls.sequence_y in ("final", "per_step"), f"{name}.sequence_y must be 'final' or 'per_step'"
    assert "train" in task_cls.splits, f"{name}.splits {task_cls.splits} must include 'train'"
    assert set(task_cls.initial_states) <= {"zeros", "random", "learnable", "conditioned"}, (
        f"{name}.initial_states {task_cls.initial_states}: unknown rule"
    )
    example = task_cls.example_pipeline
    assert isinstance(example, dict) and "data" in example, (
        f"{name}.example_pipeline must be a dict of pipeline tables with a [data] table (a small pipeline on data a "
        "plugin registers)"
    )
    _validated(
        task_cls.Options,
        example.get("task", {}).get("options", {}),
        hidden_size,
        f"{name}.Options, example_pipeline's task options",
    )


def _registry_with(task_cls: type[Any], registry: Registry) -> tuple[Registry, str]:
    """The registry and the task's name in it; a task it lacks (not installed yet) is added to a copy."""
    from seqpipe.registry import Registry

    for entry in registry.entries["task"].values():
        if entry.obj is task_cls:
            return registry, entry.name
    name = f"{task_cls.__module__}.{task_cls.__qualname__}"
    copy = Registry({kind: dict(entries) for kind, entries in registry.entries.items()}, dict(registry.clashes))
    copy.add("task", name, task_cls, "seqpipe.testing")
    return copy, name


def _run_task_contract(
    task_cls: type[Any], registry: Registry, tables: dict, root: Path, train_steps: int, splits: list[str], seed: int
) -> dict[str, Any]:
    import torch

    from seqpipe.assembly import resolve_pipeline
    from seqpipe.contracts import StepModel, Topology
    from seqpipe.exports import export_graphs

    name = task_cls.__name__
    path = root / "pipeline.toml"
    path.write_text(pipeline_toml(tables), encoding="utf-8")
    resolved = resolve_pipeline(path, registry)
    task = resolved.make_task()
    counts = task.prepare()
    assert isinstance(counts, dict) and set(task_cls.splits) <= set(counts), (
        f"{name}.prepare() must return the number of examples per split {task_cls.splits}, returned {counts!r}"
    )
    assert counts["train"] >= 1, f"{name}.prepare(): no training examples on its example_pipeline's data"
    torch.manual_seed(seed)
    model = task.build_model(
        resolved.make_topology, resolved.config.model.initial_state, resolved.config.model.initial_state_scale
    )
    assert isinstance(model, torch.nn.Module) and isinstance(getattr(model, "body", None), Topology), (
        f"{name}.build_model must return a module whose body is a Topology make_topology built (the engine reads it)"
    )
    engine_graphs = [kind for kind in resolved.graphs if kind in ("step", "sequence")]
    assert not engine_graphs or isinstance(model, StepModel), (
        f"{name}.build_model must return a seqpipe.contracts.StepModel: the engine exports its {engine_graphs} graphs"
    )
    losses = _train_steps(task, model, resolved.config.training.batch_size, train_steps, seed)
    metrics = {split: _evaluated(task, model.eval(), split) for split in splits}
    parity = export_graphs(resolved, task, model.eval(), root / "onnx", log=lambda line: None)
    missing = [
        kind
        for kind in resolved.graphs
        if kind not in parity["graphs"] or not (root / "onnx" / f"{kind}.onnx").is_file()
    ]
    assert not missing, f"{name}: graphs {missing} of {resolved.graphs} were not written"
    failed = {kind: report["max_scaled_diff"] for kind, report in parity["graphs"].items() if not report["passed"]}
    assert not failed, f"{name}: exported graphs disagree with torch beyond {parity['tolerance']:.0e}: {failed}"
    return {"graphs": list(resolved.graphs), "counts": counts, "losses": losses, "metrics": metrics, "parity": parity}


def _train_steps(task, model, batch_size: int, steps: int, seed: int) -> list[float]:
    """A few optimizer steps the way the trainer takes them; each loss a finite scalar with gradients."""
    import torch

    name = type(task).__name__
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = task.batches("train", batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses = []
    for _, batch in zip(range(steps), batches):
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, (
            f"{name}.loss must return a scalar tensor, returned {loss!r}"
        )
        assert torch.isfinite(loss), f"{name}.loss is {loss.item()} on a training batch"
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), (
            f"{name}.loss: no gradient reaches the model's parameters"
        )
        assert all(torch.isfinite(g).all() for g in grads), f"{name}.loss: a gradient is not finite"
        optimizer.step()
        losses.append(loss.item())
    assert losses, f"{name}.batches('train', {batch_size}) gave no batch"
    return losses


def _evaluated(task, model, split: str) -> dict[str, float]:
    name = type(task).__name__
    metrics = task.evaluate(model, split)
    for key in ("loss", task.monitor):
        assert key in metrics, (
            f"{name}.evaluate('{split}') must return '{key}' (the loss, and the monitor {task.monitor!r}); got "
            f"{sorted(metrics)}"
        )
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (
            f"{name}.evaluate('{split}')['{key}'] must be a finite number, got {metrics[key]!r}"
        )
    return metrics


# -- pipeline files ---------------------------------------------------------------------------------


def pipeline_tables(
    task_cls: type[Any],
    task_name: str,
    *,
    cell: str,
    topology: str,
    hidden_size: int,
    cell_options: dict[str, Any] | None = None,
    topology_options: dict[str, Any] | None = None,
    parity_sequences: int = 8,
    batch_size: int | None = None,
    holdout_fraction: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The task's ``example_pipeline`` laid over a model (registered names; pass a cell's
    ``example_options`` as ``cell_options``) and a small parity check: the tables of a pipeline file
    (see :func:`pipeline_toml`)."""
    model: dict[str, Any] = {"cell": cell, "topology": topology, "hidden_size": hidden_size}
    if cell_options:  # a cell with a required option declares example_options (projected_lstm's proj_size)
        model["cell_options"] = dict(cell_options)
    if topology_options:
        model["topology_options"] = dict(topology_options)
    base = {"model": model, "task": {"name": task_name}, "export": {"parity_sequences": parity_sequences}}
    if batch_size is not None:
        base["training"] = {"batch_size": batch_size}
    if holdout_fraction is not None:  # fewer validation and test examples: quicker evaluation and parity inputs
        base["data"] = {"validation_fraction": holdout_fraction, "test_fraction": holdout_fraction}
    return merge_tables(base, task_cls.example_pipeline or {})


def merge_tables(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` laid over it, table by table."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge_tables(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def pipeline_toml(tables: dict[str, dict[str, Any]]) -> str:
    """A pipeline file from nested dicts (see :func:`seqpipe.config.format_pipeline`)."""
    from seqpipe.config import format_pipeline

    return format_pipeline(tables)
