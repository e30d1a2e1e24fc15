"""Training in several processes with PyTorch's own DistributedDataParallel.

``torchrun --nproc_per_node=N -m seqpipe run pipeline.toml`` (or ``seqpipe run --nproc N``, which
launches exactly that through ``torch.distributed.run``) starts N ranks. Each builds the same
model from the same seed and reads the same data; every epoch, all ranks draw the same batch order
from the seeded data-order generator and rank r trains on batches r, r + N, r + 2N, … When the
epoch's batches do not divide evenly, a rank a batch short takes one of the epoch's first batches
again, as torch's ``DistributedSampler`` pads its shards, so every rank takes the same optimizer
steps and the replicas (weights, optimizer moments, weight average) stay identical, which is also
what lets a job resume from rank 0's saved state. DDP averages the gradients (gloo on CPU,
NCCL on CUDA). Rank 0 alone validates (on the whole validation split), decides about the best
epoch, patience and the time budget, and shares its decision; it alone writes the run directory,
evaluates, exports and checks parity. The other ranks stop after training.

A job resumes (``--resume RUN_DIR`` under torchrun) from the run directory's one state file: the
weights, averages, optimizer moments and data order are the same on every rank, and each rank's
own random state (its dropout masks) is saved beside rank 0's, so a resumed job continues as the
uninterrupted one would (with as many processes as the run had; bit for bit on CPU, where torch's
CPU generator draws the dropout masks).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``rank`` of ``world`` processes (1: not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def ranks_from_environment() -> Ranks:
    """The job torchrun started this process in (``RANK``, ``WORLD_SIZE``), or a single process."""
    return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA) when this is one rank of several."""
    import torch.distributed as dist

    if ranks.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def stop(ranks: Ranks) -> None:
    import torch.distributed as dist

    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(batches: Iterable[T], ranks: Ranks) -> Iterator[T]:
    """This rank's batches of an epoch: every ``world``-th, starting at its rank; the last round,
    when it is short, is completed with the epoch's first batches (so every rank gets as many)."""
    if not ranks.distributed:
        yield from batches
        return
    first: list[T] = []  # the epoch's first round, kept to pad the last one
    round_: list[T] = []
    for batch in batches:
        if len(first) < ranks.world:
            first.append(batch)
        round_.append(batch)
        if len(round_) == ranks.world:
            yield round_[ranks.rank]
            round_ = []
    if round_:
        padded = round_ + [first[i % len(first)] for i in range(ranks.world - len(round_))]
        yield padded[ranks.rank]


def shared(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value``, on every rank (picklable values: metrics, decisions)."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (picklable values)."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    box: list[Any] = [None] * ranks.world
    dist.all_gather_object(box, value)
    return box


class TaskLoss(nn.Module):
    """The task's loss as a module's forward, so DDP sees every training step whatever model method
    the task's ``loss`` calls (``forward``, ``run_sequence``, an encoder and a decoder)."""

    def __init__(self, task: Any, model: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.task.loss(self.model, batch)


def trainer(task: Any, model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The module training steps call: ``module(batch)`` → the loss (DDP-wrapped when distributed)."""
    loss = TaskLoss(task, model)
    if not ranks.distributed:
        return loss
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None)
