"""The input-encoding contract: how a column of a data file becomes the sequence a network reads
(or, for an ``[output]`` table, the token sequence a task writes).

An encoding is the fourth plugin kind, beside cells, topologies and tasks. A pipeline chooses one
in its ``[input]`` table (``kind = "characters"``, ``"words"``, ``"subwords"``, ``"numbers"`` or a
plugin's) with the encoding's own options, validated by its ``Options`` model. The task reads the
records, hands the encoding the training split's values to :meth:`InputEncoding.fit` (vocabularies,
tokenizers and scaling statistics come from the training split only), and encodes every split.

Torch-free on purpose: ``seqpipe predict`` and applications rebuild the exact encoding from an ONNX
file's metadata with :meth:`InputEncoding.from_spec`, so the module that registers an encoding
(hook ``register_encodings``) belongs to both entry-point groups, ``seqpipe`` and ``seqpipe.serving``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seqpipe.data import FLOAT32_MAX
from seqpipe.errors import DataError


class EncodingOptions(BaseModel):
    """Options every encoding takes; an encoding's own ``Options`` subclass this."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="the encoding's registered name (see `seqpipe plugins`)")
    column: str | None = Field(None, description="the data column holding the sequence; default: the task's")
    max_length: int | None = Field(
        None,
        ge=1,
        description="steps kept from the start of each sequence (every cut is "
        "counted and reported); default: the whole sequence",
    )


class InputEncoding(ABC):
    """Values of one column → a sequence per record: token ids (``dtype`` int64, one id per step) or
    feature vectors (``dtype`` float32, ``features`` numbers per step).

    Built as ``Encoding(options)``. The task calls :meth:`read` on its records, :meth:`fit` once on
    the training split's values, then :meth:`encode` on every value; :meth:`to_spec` is stored in
    every exported graph's metadata and :meth:`from_spec` rebuilds the fitted encoding from it.
    """

    Options: ClassVar[type[EncodingOptions]] = EncodingOptions
    # what a column value must be: "text" (a string; numbers are refused, never read as characters)
    # or "numbers" (a vector of floats per step; text is refused)
    reads: ClassVar[Literal["text", "numbers"]] = "text"
    # True when encoding a list of tokens gives exactly one step per token (words, characters), so a
    # tagger's labels stay aligned; False when a token may become several steps (subwords)
    token_aligned: ClassVar[bool] = False
    # what the graphs' ``x`` holds: token ids or float features
    dtype: ClassVar[Literal["int64", "float32"]] = "int64"

    def __init__(self, options: EncodingOptions) -> None:
        self.options = options
        self.table = "input"  # the pipeline table it was configured in ("input" or "output"), for messages

    @property
    def kind(self) -> str:
        return self.options.kind

    @property
    def max_length(self) -> int | None:
        return self.options.max_length

    # -- reading --------------------------------------------------------------------------------
    def columns(self, default: str) -> list[str]:
        """The data columns a record must hold for this encoding (``default``: the task's column name)."""
        return [self.options.column or default]

    def read(self, rows: Sequence[Any], default: str, path: Path, task: str) -> list[Any]:
        """Each record's value, checked against what the encoding reads; a value of the wrong kind is
        a :class:`DataError` naming the file, line and column, never coerced. ``rows`` are
        :class:`seqpipe.data.Record` s; the default reads text (see :func:`seqpipe.data.text_values`)."""
        from seqpipe.data import text_values

        return text_values(rows, self.columns(default)[0], path, task, self.kind, self.table)

    def units(self, value: Any) -> list[Any]:
        """The steps a value splits into before encoding (text encodings: characters, words or
        pieces; a list of tokens is taken as given): what a tagger labels one by one."""
        return list(value)

    # -- fitting and encoding ---------------------------------------------------------------------
    @abstractmethod
    def fit(self, values: Sequence[Any]) -> None:
        """Learn the vocabulary, tokenizer or scaling from the training split's values only."""

    @abstractmethod
    def encode(self, value: Any) -> list[int] | np.ndarray:
        """One value (a text, a list of tokens, or a [time, features] array) → its ids or standardised
        features, cut to :attr:`max_length` steps."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Vocabulary size (token ids) or features per step (float inputs)."""

    def count_cuts(self, values: Sequence[Any], account: Any, what: str) -> None:
        """Count in ``account`` (a :class:`seqpipe.data.DataAccount`) what encoding ``values`` leaves
        out: by default the values longer than :attr:`max_length` and their steps past it."""
        self.count_truncations((self.steps(v) for v in values), account, what)

    def count_truncations(self, steps: Iterable[int], account: Any, what: str) -> None:
        """Count the values whose ``steps`` (one count per value) pass :attr:`max_length`, and their
        steps past it: for an encoding that counts more in one pass over its values."""
        cut = self.max_length
        if cut is not None:
            long = [n for n in steps if n > cut]
            account.add(
                f"truncated_{what.replace(' ', '_')}",
                len(long),
                f"{what} cut to input.max_length = {cut} steps (raise it to keep them whole)",
            )
            account.add(
                "truncated_steps",
                sum(n - cut for n in long),
                "steps past input.max_length, neither trained on nor scored",
            )

    def steps(self, value: Any) -> int:
        """Steps ``value`` has before any cut (to count truncations); by default its encoded length
        without a cut."""
        return len(value)

    def word_characters(self) -> tuple[int, int, int] | None:
        """(character vocabulary size, characters per word, CNN features) when each step is a word id
        followed by that word's character ids (``x`` [..., 1 + per_word]), which the network reads
        with :class:`seqpipe.word_characters.WordCharacters`; None (the default) for one id per step."""
        return None

    # -- writing (output encodings) -------------------------------------------------------------------
    def join(self, units: Sequence[str]) -> str:
        """Tokens (from :meth:`units`) → text, for an encoding used as a task's ``[output]``: the
        decoded target. By default concatenated."""
        return "".join(units)

    # -- metadata -------------------------------------------------------------------------------------
    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """Everything a program needs to encode (and decode) as training did: ``kind``, ``dtype``, the
        fitted vocabulary or statistics, in JSON types."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> InputEncoding:
        """The fitted encoding described by :meth:`to_spec`."""


def encode_all(encoding: InputEncoding, values: Sequence[Any], account: Any, what: str) -> list[Any]:
    """Every value encoded; what the encoding leaves out (values past its ``max_length``) is counted in
    ``account`` (a :class:`seqpipe.data.DataAccount`) under ``what``, e.g. "texts" (see
    :meth:`InputEncoding.count_cuts`)."""
    if account is not None:
        encoding.count_cuts(values, account, what)
    return [encoding.encode(v) for v in values]


def number_vectors(value: Any, where: str, column: str | None) -> np.ndarray:
    """A per-step number column's value → float32 [time, features]: a JSON list of equal-length
    number lists (or of numbers: one feature), or such a list written as JSON text in a CSV cell.
    Anything else (text, a ragged vector, an empty sequence, a non-number) is a :class:`DataError`
    naming ``where`` and ``column`` (None: a value given on the command line)."""
    what = f"column '{column}'" if column else "the value"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else None
        except json.JSONDecodeError:
            value = None
        if value is None:
            raise DataError(
                f"{where}: {what} holds text ({text[:40]!r}), not a list of number vectors; the numbers "
                "encoding reads a JSON list with one vector per step, e.g. [[0.1, 2.0], [0.3, 1.5]]"
                + ('; for text choose input.kind = "characters", "words" or "subwords".' if column else ".")
            )
    if not isinstance(value, list):
        raise DataError(
            f"{where}: {what} holds {type(value).__name__} {str(value)[:40]!r}, not a list of number "
            "vectors (one per step)."
        )
    if not value:
        raise DataError(f"{where}: {what} is an empty sequence; give at least one step, or remove the record.")
    rows = [step if isinstance(step, list) else [step] for step in value]
    width = len(rows[0])
    for t, step in enumerate(rows):
        if len(step) != width:
            raise DataError(
                f"{where}: {what}: step {t + 1} has {len(step)} numbers where step 1 has {width}; "
                "every step needs the same features (fill missing ones in)."
            )
        for x in step:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not abs(x) <= FLOAT32_MAX:
                raise DataError(
                    f"{where}: {what}: step {t + 1} holds {x!r}, not a finite number (float32, |x| <= 3.4e38); "
                    "fill it in or remove the record."
                )
    if width == 0:
        raise DataError(f"{where}: {what}: steps hold no numbers; give at least one feature per step.")
    return np.asarray(rows, dtype=np.float32)


def z_normalised(value: np.ndarray) -> np.ndarray:
    """``value`` [time, features] in float64 with each feature rescaled to mean 0 and standard
    deviation 1 over the sequence's own steps (a constant feature is centred, not divided by zero)."""
    value = value.astype(np.float64)
    std = value.std(axis=0)
    return (value - value.mean(axis=0)) / np.where(std > 0, std, 1.0)
