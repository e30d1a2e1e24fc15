"""Batches of a task's examples: in order, shuffled with torch's generator (a seeded run sees the
same batches), or bucketed by length so less of each batch is padding. Imports nothing of seqpipe:
the Task contract's default ``batches`` and the tasks use it alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def batched(
    examples: Sequence[T],
    batch_size: int,
    collate: Callable[[list[T]], Any],
    *,
    shuffle: bool = False,
    generator=None,
    bucket: bool = False,
    length: Callable[[Any], int] = len,
) -> Iterator[Any]:
    """``collate`` applied to consecutive chunks of ``examples``, in an order drawn from torch's
    ``generator`` when ``shuffle`` (so a seeded run sees the same batches).

    ``bucket`` (with ``shuffle``): examples of similar ``length`` share a batch, so less of each
    batch is padding, while the order stays random (:func:`bucketed_order`)."""
    if shuffle:
        import torch  # training-side only; the torch-free runtime never calls this

        order = torch.randperm(len(examples), generator=generator).tolist()
        if bucket:
            yield from (
                collate([examples[i] for i in chunk])
                for chunk in bucketed_order(order, [length(e) for e in examples], batch_size, generator)
            )
            return
    else:
        order = list(range(len(examples)))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]])


# examples sorted by length together: enough that a batch finds neighbours of its length, few enough
# that every part of the data still turns up anywhere in the epoch
BUCKET_CHUNK_BATCHES = 50


def bucketed_order(order: list[int], lengths: Sequence[int], batch_size: int, generator) -> list[list[int]]:
    """Batches of indices from a shuffled ``order``: each run of ``BUCKET_CHUNK_BATCHES`` batches'
    worth of examples is sorted by length and cut into batches, then all batches are shuffled, so
    the model never sees the data sorted (the usual length bucketing of sequence toolkits)."""
    import torch

    chunk = batch_size * BUCKET_CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])  # stable: ties keep the random order
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
