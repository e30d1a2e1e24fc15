"""Text encodings shared by training and serving.

Torch-free on purpose: :mod:`seqpipe.runtime` rebuilds the exact encoding from an ONNX file's
metadata, so an application can turn text into token ids without torch or seqpipe's training code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PAD, UNK = "<pad>", "<unk>"


@dataclass(frozen=True)
class CharVocabulary:
    """Characters to ids: id 0 is padding, id 1 unknown, then characters by descending count."""

    symbols: tuple[str, ...]
    lowercase: bool = False
    max_length: int = 256

    @classmethod
    def fit(cls, texts: Iterable[str], *, lowercase: bool, max_length: int, min_count: int) -> CharVocabulary:
        counts = Counter(ch for text in texts for ch in cls._normalise(text, lowercase))
        kept = sorted((ch for ch, n in counts.items() if n >= min_count), key=lambda ch: (-counts[ch], ch))
        return cls((PAD, UNK, *kept), lowercase, max_length)

    @staticmethod
    def _normalise(text: str, lowercase: bool) -> str:
        return text.lower() if lowercase else text

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Ids of the first ``max_length`` characters; unseen characters map to ``<unk>``."""
        index = self._index
        return [index.get(ch, 1) for ch in self._normalise(text, self.lowercase)[: self.max_length]]

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {s: i for i, s in enumerate(self.symbols)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def to_spec(self) -> dict[str, Any]:
        return {"kind": "characters", "symbols": list(self.symbols), "pad_id": 0, "unk_id": 1,
                "lowercase": self.lowercase, "max_length": self.max_length}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CharVocabulary:
        return cls(tuple(spec["symbols"]), bool(spec["lowercase"]), int(spec["max_length"]))
