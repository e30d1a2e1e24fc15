"""Length bucketing (`[training] bucket`): every example once per epoch, in a seeded random order,
with batches of similar lengths, so less of each batch is padding; the run log reports the share."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.assembly import resolve_pipeline
from seqpipe.builtin.classify.task import ClassifyTask
from seqpipe.cli import main
from seqpipe.data import BUCKET_CHUNK_BATCHES, bucketed_order
from seqpipe.errors import ConfigError
from seqpipe.plugins import load_registry
from seqpipe.training import Padding


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=700),
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 2**31),
)
def test_bucketed_batches_hold_every_example_once_and_are_reproducible(lengths, batch_size, seed):
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = bucketed_order(order, lengths, batch_size, torch.Generator().manual_seed(seed))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert sum(len(batch) < batch_size for batch in batches) <= -(-len(lengths) // (batch_size * BUCKET_CHUNK_BATCHES))
    assert batches == bucketed_order(order, lengths, batch_size, torch.Generator().manual_seed(seed))
    # within a chunk the batches are slices of one length-sorted list: their length ranges never cross
    for batch in batches:
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def padding_share(batches: Iterator) -> float:
    padding = Padding()
    for batch in batches:
        padding.add(batch)
    return padding.share()


def test_bucketing_cuts_the_padding_of_real_subject_lines_and_keeps_the_examples(tmp_path):
    registry, _ = load_registry(False, warn=lambda line: None)
    # the bundled subjects, not the small test file: bucketing needs more examples than one chunk
    spam = tmp_path / "spam.toml"
    spam.write_text('[data]\ndataset = "spam-assassin"\n[model]\nhidden_size = 8\n', encoding="utf-8")
    resolved = resolve_pipeline(spam, registry)
    task = resolved.make_task()
    task.prepare()

    def drawn(bucket: bool) -> list:
        return list(task.batches("train", 32, shuffle=True, generator=torch.Generator().manual_seed(0), bucket=bucket))

    plain, bucketed = drawn(False), drawn(True)
    assert padding_share(bucketed) < padding_share(plain) / 4
    examples = sorted(
        tuple(row[:n].tolist()) + (int(label),)
        for batch in plain
        for row, n, label in zip(batch.tokens, batch.lengths, batch.targets)
    )
    assert examples == sorted(
        tuple(row[:n].tolist()) + (int(label),)
        for batch in bucketed
        for row, n, label in zip(batch.tokens, batch.lengths, batch.targets)
    )
    # the batch order is still random, not short-to-long
    maxima = [int(batch.lengths.max()) for batch in bucketed]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_a_bucketed_run_logs_its_padding_share_and_passes_parity(tmp_path, small_csv, write_pipeline):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, epochs=2)
    pipeline.write_text(pipeline.read_text().replace("[training]\n", "[training]\nbucket = true\n"), encoding="utf-8")
    assert "bucket = true" in pipeline.read_text()
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(0.0 <= r["padding_share"] < 1.0 for r in history)
    assert f"padding {history[0]['padding_share']:.0%}" in result.output
    assert json.loads((tmp_path / "run" / "parity.json").read_text())["passed"]


class TaskWithoutBucketing(ClassifyTask):
    """A task written before `bucket` existed: its batches() takes no such keyword."""

    def batches(self, split, batch_size, *, shuffle=False, generator=None):
        return super().batches(split, batch_size, shuffle=shuffle, generator=generator)


def test_bucketing_a_task_that_cannot_is_refused_naming_the_key(tmp_path, small_csv, write_pipeline):
    registry, _ = load_registry(False, warn=lambda line: None)
    registry.add("task", "old-classify", TaskWithoutBucketing, "tests")
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv)
    text = pipeline.read_text().replace('name = "classify"', 'name = "old-classify"')
    pipeline.write_text(text, encoding="utf-8")
    resolve_pipeline(pipeline, registry)  # fine without bucketing
    pipeline.write_text(text.replace("[training]\n", "[training]\nbucket = true\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"training\.bucket: task 'old-classify' cannot bucket its batches by length"):
        resolve_pipeline(pipeline, registry)


def test_the_padding_share_counts_every_padded_side_of_a_batch():
    from seqpipe.builtin.seq2seq.task import Batch as PairBatch

    padding = Padding()
    # sources of 3 and 1 steps padded to 3, targets of 2 and 2: 8 real steps of 10
    padding.add(
        PairBatch(torch.zeros(2, 3), torch.tensor([3, 1]), torch.zeros(2, 2), torch.tensor([2, 2]), torch.zeros(2, 2))
    )
    assert padding.share() == pytest.approx(0.2) and padding.record() == {"padding_share": pytest.approx(0.2)}
    assert Padding().share() is None and Padding().say() == ""
