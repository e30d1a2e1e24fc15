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
from seqpipe.serving.batcher import Batcher, Stopped, pad_together, split_rows

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
        if any(bad for _, _, bad in items):  # any exception: seqpipe's own, or one from a library
            raise SeqpipeError("a bad request") if key == "a" else ValueError("a bad request")
        return [(key, index) for index, _, _ in items]

    batcher = Batcher(run, max_rows, max_values=10**9)

    async def submit_all():
        tasks = [batcher.submit(key, (i, rows, bad), rows) for i, (key, rows, bad) in enumerate(specs)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(submit_all())
    finally:
        batcher.close()
    for i, ((key, _, bad), result) in enumerate(zip(specs, results)):
        if bad:
            assert isinstance(result, SeqpipeError if key == "a" else ValueError)
        else:
            assert result[0] == (key, i)  # a good request succeeds even when batched with a bad one
    for _, rows in batches:
        assert len(rows) == 1 or sum(rows) <= max_rows


def test_a_lone_request_waits_for_nothing():
    batcher = Batcher(lambda key, items: items, max_rows=64, max_values=10**9)
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


def test_padding_bounds_a_batch_and_a_long_request_runs_alone():
    seen: list[list[int]] = []

    def run(key, items):
        time.sleep(0.001)
        seen.append(items)
        return items

    batcher = Batcher(run, max_rows=64, max_values=100)

    async def submit_all():
        # 1 request of 90 steps among 10 of 5: padded together they would be 11 x 90 values
        lengths = [5] * 5 + [90] + [5] * 5
        return await asyncio.gather(*(batcher.submit("k", i, 1, steps) for i, steps in enumerate(lengths)))

    try:
        results = asyncio.run(submit_all())
    finally:
        batcher.close()
    assert [r[0] for r in results] == list(range(11))
    assert [5] in seen  # the long one ran in a batch of its own
    assert all(len(batch) * (90 if 5 in batch else 5) <= 100 or len(batch) == 1 for batch in seen)


def test_closing_fails_waiting_requests_instead_of_leaving_them_hanging():
    started = []

    def run(key, items):
        started.append(items)
        time.sleep(0.2)
        return items

    batcher = Batcher(run, max_rows=1, max_values=10**9)

    async def scenario():
        tasks = [asyncio.ensure_future(batcher.submit("k", i, 1)) for i in range(3)]
        await asyncio.sleep(0.05)  # the first is running; the others wait
        batcher.close()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
        late = await asyncio.gather(batcher.submit("k", 9, 1), return_exceptions=True)
        return done, late

    done, late = asyncio.run(scenario())
    assert all(isinstance(r, Stopped) for r in done[1:]) and isinstance(late[0], Stopped)
    assert started == [[0]]


def test_a_request_whose_client_left_is_not_run():
    ran = []

    def run(key, items):
        ran.extend(items)
        time.sleep(0.05)
        return items

    batcher = Batcher(run, max_rows=1, max_values=10**9)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit("k", "first", 1))
        gone = asyncio.ensure_future(batcher.submit("k", "gone", 1))
        kept = asyncio.ensure_future(batcher.submit("k", "kept", 1))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client disconnected while the first batch ran
        return await first, await kept

    try:
        assert asyncio.run(scenario()) == (("first", 1), ("kept", 1))
    finally:
        batcher.close()
    assert ran == ["first", "kept"]
