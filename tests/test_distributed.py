"""How a torchrun job splits an epoch's batches: every rank the same number of steps, every batch
trained on, the short last round padded with the epoch's first batches (as DistributedSampler pads)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seqpipe.distributed import Ranks, shard


@given(batches=st.integers(1, 40), world=st.integers(1, 6))
def test_every_rank_takes_the_same_steps_and_every_batch_is_trained_on(batches, world):
    shards = [list(shard(iter(range(batches)), Ranks(rank, world))) for rank in range(world)]
    steps = -(-batches // world)
    assert all(len(s) == steps for s in shards)
    trained = [b for s in shards for b in s]
    assert sorted(set(trained)) == list(range(batches))
    # without padding each batch goes to exactly one rank; the padding repeats the first round's batches
    repeats = [b for b in set(trained) if trained.count(b) > 1]
    assert len(trained) - len(set(trained)) == steps * world - batches and all(b < world for b in repeats)
    assert [s[: batches // world] for s in shards] == [
        list(range(r, world * (batches // world), world)) for r in range(world)
    ]


def test_one_process_gets_every_batch_in_order():
    assert list(shard(iter("abcde"), Ranks())) == list("abcde")
