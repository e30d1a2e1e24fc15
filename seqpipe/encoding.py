"""Text encodings shared by training and serving.

Torch-free on purpose: :mod:`seqpipe.serving.runtime` rebuilds the exact encoding from an ONNX file's
metadata, so an application can turn text into token ids without torch or seqpipe's training code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"


def pad_ids(encoded: list[list[Any]], what: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """Id lists (or lists of per-step id lists: a word and its characters) → (ids [B, T] or [B, T, ids]
    int64 padded with 0, lengths [B] int64); an empty list is a user error."""
    from seqpipe.errors import SeqpipeError

    for number, ids in enumerate(encoded, start=1):
        if not ids:
            raise SeqpipeError(f"input {number} is empty; give at least one {what}.")
    return padded_ids(encoded)


def padded_ids(encoded: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """pad_ids without the check: an empty id list becomes a row of padding with length 0 (training
    batches, where the task decides what an empty input means)."""
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    if not len(lengths):
        return np.zeros((0, 0), dtype=np.int64), lengths
    first = next((ids[0] for ids in encoded if ids), None)
    per_step = (len(first),) if isinstance(first, list) else ()  # several ids per step
    tokens = np.zeros((len(encoded), int(lengths.max()), *per_step), dtype=np.int64)
    for row, ids in enumerate(encoded):
        if ids:
            tokens[row, : len(ids)] = ids
    return tokens, lengths


class _Symbols:
    """Length and a cached symbol → id index for a frozen vocabulary with ``symbols``."""

    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {s: i for i, s in enumerate(self.symbols)}
            object.__setattr__(self, "_index_cache", cached)  # frozen dataclass: a cache, not state
        return cached


@dataclass(frozen=True)
class CharVocabulary(_Symbols):
    """Characters to ids: id 0 is padding, id 1 unknown, then characters by descending count."""

    symbols: tuple[str, ...]
    lowercase: bool = False
    max_length: int = 256

    @classmethod
    def fit(
        cls, texts: Iterable[str | Sequence[str]], *, lowercase: bool, max_length: int, min_count: int
    ) -> CharVocabulary:
        """Symbols by descending training count: the characters of texts, or the tokens of token
        lists (a tagger's characters: each token is one step)."""
        counts = Counter(unit for text in texts for unit in cls.units(text, lowercase))
        kept = sorted((ch for ch, n in counts.items() if n >= min_count), key=lambda ch: (-counts[ch], ch))
        return cls((PAD, UNK, *kept), lowercase, max_length)

    @staticmethod
    def units(text: str | Sequence[str], lowercase: bool) -> list[str]:
        """A text's characters (or a token list's tokens), lower-cased when ``lowercase``."""
        return (
            list(text.lower() if lowercase else text)
            if isinstance(text, str)
            else [u.lower() if lowercase else u for u in text]
        )

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        """Ids of the first ``max_length`` characters; unseen characters map to ``<unk>``."""
        index = self._index
        return [index.get(ch, 1) for ch in self.units(text, self.lowercase)[: self.max_length]]

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": "characters",
            "symbols": list(self.symbols),
            "pad_id": 0,
            "unk_id": 1,
            "lowercase": self.lowercase,
            "max_length": self.max_length,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CharVocabulary:
        return cls(tuple(spec["symbols"]), bool(spec["lowercase"]), int(spec["max_length"]))


# Suffixes that mark a part of speech in English, longest first: an unseen word is encoded by its
# shape and suffix (e.g. "<unk:cap:ing>"), so a tagger still sees "Rumbling" as a likely verb form.
SIGNATURE_SUFFIXES = (
    "ness",
    "ment",
    "able",
    "ible",
    "ing",
    "ion",
    "ous",
    "ive",
    "ful",
    "est",
    "ity",
    "ed",
    "ly",
    "er",
    "al",
    "ic",
    "es",
    "s",
    "y",
)
WORD_PATTERN = r"\w+(?:[-'’.]\w+)*|[^\w\s]+"


def word_signature(word: str) -> str:
    """The class an unknown word falls into, from its shape: digits, punctuation, capitals, hyphens, suffix."""
    if any(ch.isdigit() for ch in word):
        return "<unk:num>"
    if not any(ch.isalnum() for ch in word):
        return "<unk:punct>"
    parts = ["unk"]
    if word[0].isupper():
        parts.append("cap")
    if "-" in word:
        parts.append("hyphen")
    lower = word.lower()
    suffix = next((s for s in SIGNATURE_SUFFIXES if lower.endswith(s) and len(lower) > len(s) + 1), None)
    if suffix:
        parts.append(suffix)
    return "<" + ":".join(parts) + ">"


def word_character_ids(word: str, index: dict[str, int], per_word: int) -> list[int]:
    """A word's character ids for a character-aware word representation, 0-padded to ``per_word``;
    a longer word gives its first ``per_word - per_word // 2`` and last ``per_word // 2`` characters
    (its prefix and its suffix, where a word's class shows). Unseen characters are 1 (unknown)."""
    if len(word) > per_word:
        word = word[: per_word - per_word // 2] + word[len(word) - per_word // 2 :]
    ids = [index.get(ch, 1) for ch in word]
    return ids + [0] * (per_word - len(ids))


def split_words(text: str) -> list[str]:
    """Words and punctuation marks, the way the bundled corpora are tokenised ("Atlanta's" stays one word)."""
    import re

    return re.findall(WORD_PATTERN, text)


@dataclass(frozen=True)
class WordVocabulary(_Symbols):
    """Words to ids: 0 padding, 1 unknown, then unknown-word signatures, then words by count.

    Training words seen fewer than ``min_count`` times are encoded by their signature, so the
    model learns what to make of words it has never seen.
    """

    symbols: tuple[str, ...]
    lowercase: bool = False

    @classmethod
    def fit(cls, sentences: Iterable[list[str]], *, lowercase: bool, min_count: int) -> WordVocabulary:
        counts = Counter(w.lower() if lowercase else w for sentence in sentences for w in sentence)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        signatures = sorted({word_signature(w) for w, n in counts.items() if n < min_count})
        return cls((PAD, UNK, *signatures, *kept), lowercase)

    def encode(self, words: list[str]) -> list[int]:
        index = self._index
        return [index.get(w.lower() if self.lowercase else w) or index.get(word_signature(w), 1) for w in words]

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": "words",
            "symbols": list(self.symbols),
            "pad_id": 0,
            "unk_id": 1,
            "lowercase": self.lowercase,
            "unknown_words": "encoded as seqpipe.encoding.word_signature(word) when that symbol exists, else <unk>",
            "tokenizer": {"pattern": WORD_PATTERN, "note": "re.findall(pattern, text)"},
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> WordVocabulary:
        return cls(tuple(spec["symbols"]), bool(spec["lowercase"]))
