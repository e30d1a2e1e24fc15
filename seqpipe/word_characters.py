"""A character-aware word representation: each word's embedding beside a small character CNN's
features, so a word never seen in training still shows its prefix, suffix, capitals and digits.

The input step is ``[word id, character id × per_word]`` (the words encoding with
``input.characters``; character id 0 pads a short word). The CNN is written as one matrix product
over each character's window of ``WIDTH`` characters (the characters' embeddings side by side), a
ReLU, and a maximum over the word's real characters (padding masked to 0, below any ReLU output). It
is the arithmetic of a 1-D convolution, kept to Gather, MatMul and ReduceMax so the native ONNX
graphs (:mod:`seqpipe.onnx.word_characters`) repeat it operator for operator, in fp16 copies too.
"""

from __future__ import annotations

import torch
from torch import nn

CHARACTER_EMBEDDING = 16  # width of one character's embedding
WIDTH = 3  # characters each CNN window reads: the character and one on either side


def window_index(per_word: int) -> torch.Tensor:
    """[per_word, WIDTH]: for each character slot, its window's positions in the padded slots
    (``WIDTH // 2`` zero slots added on either side)."""
    return torch.arange(per_word)[:, None] + torch.arange(WIDTH)[None, :]


class WordCharacters(nn.Module):
    """Steps ``[..., 1 + per_word]`` int64 → ``[..., word_size + features]``."""

    windows: torch.Tensor  # a buffer: [per_word, WIDTH] window positions

    def __init__(
        self, vocab_size: int, word_size: int, characters: int, per_word: int, features: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.per_word, self.features = per_word, features
        self.words = nn.Embedding(vocab_size, word_size, padding_idx=0)
        self.characters = nn.Embedding(characters, CHARACTER_EMBEDDING, padding_idx=0)
        self.window = nn.Linear(WIDTH * CHARACTER_EMBEDDING, features)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("windows", window_index(per_word), persistent=False)

    @property
    def ids_per_step(self) -> int:
        return 1 + self.per_word

    @property
    def output_size(self) -> int:
        return self.words.embedding_dim + self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        words, chars = x[..., 0], x[..., 1:]  # [...], [..., per_word]
        padded = nn.functional.pad(chars, (WIDTH // 2, WIDTH // 2))  # zero ids: zero embeddings
        windows = self.characters(padded[..., self.windows])  # [..., per_word, WIDTH, E]
        h = torch.relu(self.window(windows.flatten(-2)))  # [..., per_word, features]
        h = (h * (chars != 0).unsqueeze(-1).to(h.dtype)).amax(dim=-2)  # padding slots count as 0
        return self.dropout(torch.cat([self.words(words), h], dim=-1))
