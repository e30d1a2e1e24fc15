"""Gathering concurrent requests into one onnxruntime call, the way a serving engine's dynamic
batcher does, but for ragged sequences: requests of different lengths are padded to a common length
per batch, and their results cut back apart.

One batch runs at a time, in a thread of its own (onnxruntime releases the GIL, so the event loop
keeps taking requests meanwhile); whatever arrived while it ran forms the next batch. A lone request
therefore waits for nothing: batching costs no latency at low load and grows with the load. Only
requests with the same key (same kind of input, same options) share a batch, and a batch stops
growing before its padding would pass a bound on its size: one long request cannot make the
others' padding take the server's memory. When a batch fails, its
requests run again one by one, so a bad request fails alone and never takes its neighbours with it.
Torch-free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqpipe.serving.runtime import keep_sessions_here


@dataclass
class Job:
    key: Hashable
    item: Any
    rows: int
    steps: int  # its padded length in values per row (time steps × values per step): what padding costs
    future: asyncio.Future = field(repr=False)


class Stopped(Exception):
    """The batcher was closed (the server is stopping) before this request ran."""


class Batcher:
    """``await batcher.submit(key, item, rows, steps)`` → ``(run(key, items)``'s result for ``item``, the
    rows of the batch it ran in).

    ``run`` gets the items of one batch (same key, in arrival order; at most ``max_rows`` rows, and
    at most ``max_values`` values once padded to the longest, unless one item alone has more) and
    returns one result per item. It runs in the batcher's own thread, where the graphs a predictor
    opens stay open (:func:`seqpipe.serving.runtime.keep_sessions_here`); ``call`` runs anything else
    there (a model's warm-up).
    """

    def __init__(self, run: Callable[[Hashable, list[Any]], list[Any]], max_rows: int, max_values: int) -> None:
        self._run, self.max_rows, self.max_values = run, max_rows, max_values
        self._pending: list[Job] = []
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, initializer=keep_sessions_here)
        self._closed = False

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def submit(self, key: Hashable, item: Any, rows: int, steps: int = 1) -> tuple[Any, int]:
        if self._closed:
            raise Stopped("the server is stopping; send the request again to another replica.")
        job = Job(key, item, rows, steps, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())
        return await job.future

    def _next_batch(self) -> list[Job]:
        self._pending = [job for job in self._pending if not job.future.done()]  # clients gone: skip
        if not self._pending:
            return []
        first = self._pending[0]
        batch: list[Job] = []
        rows = longest = 0
        for job in self._pending:
            if job.key != first.key:
                continue
            padded = (rows + job.rows) * max(longest, job.steps)
            if batch and (rows + job.rows > self.max_rows or padded > self.max_values):
                break
            batch.append(job)
            rows, longest = rows + job.rows, max(longest, job.steps)
        taken = {id(job) for job in batch}
        self._pending = [job for job in self._pending if id(job) not in taken]
        return batch

    async def _work(self) -> None:
        batch: list[Job] = []
        try:
            while self._pending:
                batch = self._next_batch()
                if not batch:
                    break
                rows = sum(job.rows for job in batch)
                try:
                    results = await self.call(self._run, batch[0].key, [j.item for j in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} requests gave {len(results)} results")
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0].future, error=exc)
                        continue
                    for job in batch:  # which request was at fault: each alone
                        try:
                            (result,) = await self.call(self._run, job.key, [job.item])
                        except Exception as alone:
                            _settle(job.future, error=alone)
                        else:
                            _settle(job.future, (result, job.rows))
                    continue
                for job, result in zip(batch, results):
                    _settle(job.future, (result, rows))
        except BaseException as exc:  # cancelled (the server stops) or the executor is gone: nobody hangs
            for job in batch + self._pending:
                _settle(job.future, error=Stopped(f"the server is stopping ({type(exc).__name__}); send it again."))
            self._pending = []
            raise
        finally:
            self._worker = None

    def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        for job in self._pending:
            _settle(job.future, error=Stopped("the server is stopping; send the request again to another replica."))
        self._pending = []
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def pad_together(arrays: list[np.ndarray], pad: float | int = 0) -> tuple[np.ndarray, list[int]]:
    """Arrays [rows_i, T_i, …] with the same trailing shape → one [Σ rows, max T, …] array padded
    with ``pad`` after each one's own steps, and each one's T (to cut its results back)."""
    steps = [a.shape[1] for a in arrays]
    rows = sum(a.shape[0] for a in arrays)
    out = np.full((rows, max(steps), *arrays[0].shape[2:]), pad, dtype=arrays[0].dtype)
    start = 0
    for a in arrays:
        out[start : start + a.shape[0], : a.shape[1]] = a
        start += a.shape[0]
    return out, steps


def split_rows(array: np.ndarray, rows: list[int], steps: list[int] | None = None) -> list[np.ndarray]:
    """``array`` [Σ rows, …] cut back into one piece per request; with ``steps``, each piece's time
    axis (axis 1) is cut back to that request's own length as well."""
    pieces, start = [], 0
    for i, n in enumerate(rows):
        piece = array[start : start + n]
        pieces.append(piece[:, : steps[i]] if steps is not None else piece)
        start += n
    return pieces
