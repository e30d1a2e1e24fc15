"""Training in several processes with PyTorch's own DistributedDataParallel.

``torchrun --nproc_per_node=N -m seqpipe run pipeline.toml`` (or ``seqpipe run --nproc N``, which
launches exactly that through ``torch.distributed.run``) starts N ranks. Each builds the same
model from the same seed and reads the same data; every epoch, all ranks draw the same batch order
from the seeded data-order generator and rank r trains on batches r, r + N, r + 2N, … (DDP's
``join`` evens out a shard that is one batch shorter). DDP averages the gradients (gloo on CPU,
NCCL on CUDA). Rank 0 alone validates (on the whole validation split), decides about the best
epoch, patience and the time budget, and shares its decision; it alone writes the run directory,
evaluates, exports and checks parity. The other ranks stop after training.
"""

from __future__ import annotations

import contextlib
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
    """This rank's batches of an epoch: every ``world``-th, starting at its rank."""
    for index, batch in enumerate(batches):
        if index % ranks.world == ranks.rank:
            yield batch


def shared(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value``, on every rank (picklable values: metrics, decisions)."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class TaskLoss(nn.Module):
    """The task's loss as a module's forward, so DDP sees every training step whatever model method
    the task's ``loss`` calls (``forward``, ``run_sequence``, an encoder and a decoder)."""

    def __init__(self, task: Any, model: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.task.loss(self.model, batch)


def trainer(task: Any, model: nn.Module, ranks: Ranks, device: torch.device) -> tuple[nn.Module, Any]:
    """The module training steps call (``module(batch)`` → loss), and a context for one epoch's loop
    (DDP's ``join``, for ranks whose shards differ by a batch)."""
    loss = TaskLoss(task, model)
    if not ranks.distributed:
        return loss, contextlib.nullcontext
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped, wrapped.join
