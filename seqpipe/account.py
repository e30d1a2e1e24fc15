"""The account of what reading and preparing users' data skipped or cut short (:class:`DataAccount`).

A module of its own so that the readers (:mod:`seqpipe.readers`), the label checks
(:mod:`seqpipe.labels`) and the data sources (:mod:`seqpipe.data`) can all fill one in without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DataAccount:
    """What reading and preparing the data skipped or cut short. Nothing is left out silently: every
    count lands in the run log and in ``metrics.json`` (``data``)."""

    counts: dict[str, int] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # key -> the files it was counted in (add_for)

    def add(self, key: str, count: int, description: str) -> None:
        """Count ``count`` more of ``key`` (e.g. ``"truncated_sentences"``); ``description`` says
        what it is in words, e.g. "sentences cut to task.options.max_length = 128 tokens"."""
        if count:
            self.counts[key] = self.counts.get(key, 0) + count
            self.descriptions[key] = description

    def add_for(self, key: str, count: int, description: str, path: Path) -> None:
        """:meth:`add` for something counted per file: the description ends naming each file it was
        found in, e.g. "byte-order mark stripped from the start of train.csv, test.csv"."""
        if count:
            names = self.files.setdefault(key, [])
            names += [path.name] if path.name not in names else []
            self.add(key, count, f"{description} {', '.join(names)}")

    def lines(self) -> list[str]:
        return [f"{self.counts[key]:,} {self.descriptions[key]}" for key in self.counts]
