"""Checking the spelling of labels (classes, or tags) across every split's file (:class:`LabelSpellings`):
' ham' beside 'ham', or 'Ham' beside 'ham', is refused, or stripped and counted with data.strip_labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from seqpipe.account import DataAccount
from seqpipe.errors import DataError


class LabelSpellings:
    """Labels (classes, or tags) as read from every split's file, in reading order: where each is first
    seen and how often. Labels are told apart exactly, so ' ham' beside 'ham', or 'Ham' beside 'ham',
    would be two classes: :meth:`check` refuses them, naming the line of the odd spelling's first
    example; with ``strip`` (data.strip_labels) spaces around labels are stripped and counted instead."""

    def __init__(self, what: str, strip: bool = False, account: DataAccount | None = None) -> None:
        self.what, self.strip, self.account = what, strip, account
        self.first: dict[str, tuple[Path, int]] = {}
        self.counts: Counter[str] = Counter()

    def read(self, labels: Sequence[str], path: Path, lines: Sequence[int]) -> list[str]:
        """``labels`` as read from ``path`` (the ``lines`` they are on), noted; stripped with ``strip``."""
        labels = self._stripped(labels, path, lines) if self.strip else list(labels)
        self.counts.update(labels)
        for label in dict.fromkeys(labels):  # each new label once, at its first line
            self.first.setdefault(label, (path, lines[labels.index(label)]))
        return labels

    def _stripped(self, labels: Sequence[str], path: Path, lines: Sequence[int]) -> list[str]:
        stripped = [label.strip() for label in labels]
        blank = next((line for label, line in zip(stripped, lines) if not label), None)
        if blank is not None:
            raise DataError(f"{path}:{blank}: the {self.what} is only spaces; fill it in or remove the record.")
        if self.account is not None:
            self.account.add_for(
                f"stripped_{self.what}s",
                sum(a != b for a, b in zip(labels, stripped)),
                f"{self.what}s with spaces around them stripped (data.strip_labels) in",
                path,
            )
        return stripped

    def site(self, labels: Iterable[str]) -> str:
        """'path:line' of the first example of any of ``labels``, in reading order."""
        order = {label: i for i, label in enumerate(self.first)}
        path, line = self.first[min(labels, key=order.__getitem__)]
        return f"{path}:{line}"

    def check(self) -> None:
        """Refuse the first label, in reading order, with spaces around it, or that differs only by case
        from a more frequent one (or as frequent and seen first)."""
        order = {label: i for i, label in enumerate(self.first)}
        forms: dict[str, list[str]] = {}
        for label in self.first:
            forms.setdefault(label.strip().casefold(), []).append(label)
        for label in self.first:
            twins = [other for other in forms[label.strip().casefold()] if other != label]
            if label != label.strip():
                raise DataError(self._spaced(label, twins))
            usual = max([label, *twins], key=lambda t: (self.counts[t], -order[t]))
            if usual != label:
                raise DataError(
                    self._odd(label, usual, "by case") + f"; fix the spelling ({self.what}s are told apart exactly)."
                )

    def _spaced(self, label: str, twins: list[str]) -> str:
        twin = max(twins, key=lambda t: (t == t.strip(), t == label.strip(), self.counts[t]), default=None)
        how = "by surrounding spaces" + (" and case" if twin is not None and twin.strip() != label.strip() else "")
        return (
            self._odd(label, twin, how) + f"; fix the spelling, or set data.strip_labels = true to strip spaces around "
            f"{self.what}s (counted in the run log)."
        )

    def _odd(self, label: str, twin: str | None, how: str) -> str:
        path, line = self.first[label]
        if twin is None:
            return f"{path}:{line}: {self.what} {label!r} has spaces around it"
        twin_path, twin_line = self.first[twin]
        where = f"line {twin_line}" if twin_path == path else f"{twin_path}:{twin_line}"
        return f"{path}:{line}: {self.what} {label!r} differs from {twin!r} ({where}) only {how}"
