"""The server's batcher: concurrent requests share batches (same key only, at most max_rows rows
unless one request alone has more), every request gets its own result, and a request that fails
fails alone, never its neighbours; ragged arrays pad together and cut back apart exactly."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.errors import SeqpipeError
from seqpipe.serving.batcher import Batcher, pad_together, split_rows

jobs = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(min_value=1, max_value=6), st.booleans()),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(jobs, st.integers(min_value=1, max_value=10))
def test_batches_keep_keys_apart_and_bounded_and_isolate_failures(specs, max_rows):
    batches: list[tuple[str, list[int]]] = []

    def run(key, items):
        time.sleep(0.001)  # let the next requests pile up meanwhile
        batches.append((key, [rows for _, rows, _ in items]))
        if any(bad for _, _, bad in items):
            raise SeqpipeError("a bad request")
        return [(key, index) for index, _, _ in items]

    batcher = Batcher(run, max_rows)

    async def submit_all():
        tasks = [batcher.submit(key, (i, rows, bad), rows) for i, (key, rows, bad) in enumerate(specs)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(submit_all())
    finally:
        batcher.close()
    for i, ((key, _, bad), result) in enumerate(zip(specs, results)):
        if bad:
            assert isinstance(result, SeqpipeError)
        else:
            assert result[0] == (key, i)  # a good request succeeds even when batched with a bad one
    for _, rows in batches:
        assert len(rows) == 1 or sum(rows) <= max_rows


def test_a_lone_request_waits_for_nothing():
    batcher = Batcher(lambda key, items: items, max_rows=64)
    try:
        start = time.perf_counter()
        assert asyncio.run(batcher.submit("k", "item", 1)) == ("item", 1)
        assert time.perf_counter() - start < 0.5
    finally:
        batcher.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 9)), min_size=1, max_size=8), st.integers(0, 2))
def test_pad_together_and_split_rows_round_trip(shapes, features):
    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(rows, steps, *([features] if features else []))).astype(np.float32) for rows, steps in shapes
    ]
    padded, steps = pad_together(arrays)
    assert padded.shape[0] == sum(a.shape[0] for a in arrays) and padded.shape[1] == max(steps)
    for original, piece in zip(arrays, split_rows(padded, [a.shape[0] for a in arrays], steps)):
        np.testing.assert_array_equal(original, piece)
    start = 0
    for a in arrays:  # the padding is zeros
        assert not padded[start : start + a.shape[0], a.shape[1] :].any()
        start += a.shape[0]


@pytest.mark.parametrize("rows", [[1], [2, 3, 1]])
def test_split_rows_without_steps_keeps_the_time_axis(rows):
    array = np.arange(sum(rows) * 4).reshape(sum(rows), 4)
    pieces = split_rows(array, rows)
    assert [p.shape for p in pieces] == [(n, 4) for n in rows]
    np.testing.assert_array_equal(np.concatenate(pieces), array)
