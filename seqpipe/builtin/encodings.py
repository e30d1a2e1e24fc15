"""The built-in input encodings: characters, words, subwords (BPE or unigram) and numbers.

Torch-free: registered in the training and the serving plugin groups alike, since ``seqpipe
predict`` rebuilds each encoding from an exported graph's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from seqpipe import hookimpl
from seqpipe.encoding import PAD, UNK, CharVocabulary, WordVocabulary, split_words, word_character_ids
from seqpipe.errors import DataError
from seqpipe.inputs import EncodingOptions, InputEncoding, number_vectors, z_normalised


class CharactersOptions(EncodingOptions):
    kind: Literal["characters"] = "characters"
    lowercase: bool = Field(False, description="fold text to lower case before encoding")
    min_count: int = Field(2, ge=1, description="training characters seen fewer times become <unk>")
    max_length: int | None = Field(
        256, ge=1, description="characters kept from the start of each text (cuts are counted)"
    )


class Characters(InputEncoding):
    """One step per character; ids by descending training count (0 padding, 1 unknown)."""

    Options = CharactersOptions
    token_aligned = True

    def __init__(self, options: CharactersOptions, vocabulary: CharVocabulary | None = None) -> None:
        super().__init__(options)
        self.vocabulary = vocabulary

    def units(self, value: str | Sequence[str]) -> list[str]:
        return CharVocabulary.units(value, self.options.lowercase)

    def fit(self, values: Sequence[Any]) -> None:
        self.vocabulary = CharVocabulary.fit(
            values,
            lowercase=self.options.lowercase,
            max_length=self.options.max_length or 1 << 31,
            min_count=self.options.min_count,
        )

    def encode(self, value: str | Sequence[str]) -> list[int]:
        index = self.vocabulary._index
        return [index.get(u, 1) for u in self.units(value)[: self.max_length]]

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def to_spec(self) -> dict[str, Any]:
        return {
            "dtype": "int64",
            "column": self.options.column,
            "join": "",
            **self.vocabulary.to_spec(),
            "max_length": self.options.max_length,
            "encode": "one id per character (after lower-casing when lowercase): index in symbols, else unk_id; "
            "keep the first max_length",
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Characters:
        options = CharactersOptions(
            column=spec.get("column"), lowercase=bool(spec["lowercase"]), max_length=spec.get("max_length")
        )
        return cls(
            options,
            CharVocabulary(tuple(spec["symbols"]), bool(spec["lowercase"]), int(spec.get("max_length") or 1 << 31)),
        )


class WordsOptions(EncodingOptions):
    kind: Literal["words"] = "words"
    lowercase: bool = Field(
        False, description="fold words to lower case (capitals still shape unknown-word signatures)"
    )
    min_count: int = Field(2, ge=1, description="rarer training words are encoded by their shape/suffix signature")
    characters: int = Field(
        0,
        ge=0,
        le=64,
        description="also give the network each word's characters, read by a small "
        "character CNN whose features join the word embedding (what unseen words show by their "
        "spelling): up to this many characters per word, a longer word's first and last halves "
        "(counted and reported); 0: word ids only",
    )
    character_features: int | None = Field(
        None, ge=1, le=1024, description="the character CNN's features per word (with input.characters; default 32)"
    )

    @model_validator(mode="after")
    def _features_need_characters(self) -> WordsOptions:
        if self.character_features is not None and not self.characters:
            raise ValueError(
                "character_features sets the character CNN, which input.characters turns on; "
                "add characters = 16 (say), or remove character_features"
            )
        return self


class Words(InputEncoding):
    """One step per word: text is split with seqpipe's word pattern; a token list (CoNLL) is taken as
    given. Rare and unseen words are encoded by their shape/suffix signature (``<unk:cap:ing>``).
    With ``characters``, a step is the word's id followed by its character ids."""

    Options = WordsOptions
    token_aligned = True

    def __init__(
        self, options: WordsOptions, vocabulary: WordVocabulary | None = None, characters: CharVocabulary | None = None
    ) -> None:
        super().__init__(options)
        self.vocabulary = vocabulary
        self.characters = characters  # with options.characters: the training words' characters

    @staticmethod
    def units(value: str | Sequence[str]) -> list[str]:
        return split_words(value) if isinstance(value, str) else list(value)

    def fit(self, values: Sequence[Any]) -> None:
        self.vocabulary = WordVocabulary.fit(
            (self.units(v) for v in values), lowercase=self.options.lowercase, min_count=self.options.min_count
        )
        if self.options.characters:  # case kept: capitals are what the characters tell beside a lower-cased word
            self.characters = CharVocabulary.fit(
                (w for v in values for w in self.units(v)),
                lowercase=False,
                max_length=self.options.characters,
                min_count=2,
            )

    def encode(self, value: str | Sequence[str]) -> list[int] | list[list[int]]:
        words = self.units(value)[: self.max_length]
        ids = self.vocabulary.encode(words)
        if not self.options.characters:
            return ids
        index, per_word = self.characters._index, self.options.characters
        return [[i, *word_character_ids(w, index, per_word)] for i, w in zip(ids, words)]

    def word_characters(self) -> tuple[int, int, int] | None:
        o = self.options
        return (len(self.characters), o.characters, o.character_features or 32) if o.characters else None

    def count_cuts(self, values: Sequence[Any], account: Any, what: str) -> None:
        per_word = self.options.characters
        if not per_word:
            return super().count_cuts(values, account, what)
        texts = [self.units(v) for v in values]  # split once for both counts
        self.count_truncations((len(words) for words in texts), account, what)
        long = sum(len(w) > per_word for words in texts for w in words[: self.max_length])
        account.add(
            "shortened_words",
            long,
            f"words longer than input.characters = {per_word}: the character CNN reads "
            f"their first {per_word - per_word // 2} and last {per_word // 2} characters (raise it to read them whole)",
        )

    def steps(self, value: Any) -> int:
        return len(self.units(value))

    def join(self, units: Sequence[str]) -> str:
        return " ".join(units)

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def to_spec(self) -> dict[str, Any]:
        spec = {
            "dtype": "int64",
            "column": self.options.column,
            "join": " ",
            "max_length": self.options.max_length,
            **self.vocabulary.to_spec(),
            "min_count": self.options.min_count,
        }
        per_word = self.options.characters
        if per_word:
            spec["features"] = 1 + per_word  # x: [..., 1 + per_word] ids per step
            spec["characters"] = {
                "symbols": list(self.characters.symbols),
                "pad_id": 0,
                "unk_id": 1,
                "per_word": per_word,
                "encode": "step = [word id, then seqpipe.encoding.word_character_ids(word, index in "
                "symbols, per_word)]: the word's characters (case kept), unknown ones unk_id, "
                f"0-padded to per_word; a longer word: its first {per_word - per_word // 2} "
                f"and last {per_word // 2} characters",
            }
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Words:
        characters = spec.get("characters")
        options = WordsOptions(
            column=spec.get("column"),
            lowercase=bool(spec["lowercase"]),
            max_length=spec.get("max_length"),
            characters=characters["per_word"] if characters else 0,
        )
        vocabulary = CharVocabulary(tuple(characters["symbols"]), False, characters["per_word"]) if characters else None
        return cls(options, WordVocabulary.from_spec(spec), vocabulary)


class SubwordsOptions(EncodingOptions):
    kind: Literal["subwords"] = "subwords"
    model: Literal["bpe", "unigram"] = Field("bpe", description="byte-pair encoding or a unigram language model")
    vocab_size: int = Field(1000, ge=16, description="subword vocabulary size, special symbols included")
    lowercase: bool = Field(False, description="fold text to lower case before splitting")
    max_length: int | None = Field(
        256, ge=1, description="subwords kept from the start of each text (cuts are counted)"
    )


SPECIALS = (PAD, UNK, "<sos>", "<eos>")


class Subwords(InputEncoding):
    """Subword pieces learnt on the training split with Hugging Face ``tokenizers`` (BPE or unigram).

    The trained tokenizer is stored whole in the metadata (its JSON), so a program in another
    language loads it with any ``tokenizers`` binding (Rust, Python, Node) and encodes as training did.
    """

    Options = SubwordsOptions

    def __init__(self, options: SubwordsOptions, tokenizer: Any = None) -> None:
        super().__init__(options)
        self.tokenizer = tokenizer

    def _text(self, value: str | Sequence[str]) -> str:
        text = value if isinstance(value, str) else " ".join(value)
        return text.lower() if self.options.lowercase else text

    def fit(self, values: Sequence[Any]) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        o = self.options
        if o.model == "bpe":
            tokenizer = Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(vocab_size=o.vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        else:
            tokenizer = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(
                vocab_size=o.vocab_size, special_tokens=list(SPECIALS), unk_token=UNK, show_progress=False
            )
        # Metaspace keeps word boundaries inside the pieces ("▁the"), so decoding restores the spaces
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        tokenizer.train_from_iterator((self._text(v) for v in values), trainer=trainer)
        self.tokenizer = tokenizer

    def units(self, value: str | Sequence[str]) -> list[str]:
        return self.tokenizer.encode(self._text(value)).tokens

    def encode(self, value: str | Sequence[str]) -> list[int]:
        return self.tokenizer.encode(self._text(value)).ids[: self.max_length]

    def steps(self, value: Any) -> int:
        return len(self.tokenizer.encode(self._text(value)).ids)

    def join(self, units: Sequence[str]) -> str:
        return self.tokenizer.decoder.decode(list(units))

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def to_spec(self) -> dict[str, Any]:
        vocab = self.tokenizer.get_vocab()
        return {
            "kind": "subwords",
            "dtype": "int64",
            "column": self.options.column,
            "model": self.options.model,
            "lowercase": self.options.lowercase,
            "max_length": self.options.max_length,
            "pad_id": vocab[PAD],
            "unk_id": vocab[UNK],
            "symbols": sorted(vocab, key=vocab.get),
            "tokenizer_json": self.tokenizer.to_str(),
            "encode": "lower-case when lowercase, then Tokenizer.from_str(tokenizer_json).encode(text).ids "
            "(Hugging Face tokenizers); keep the first max_length",
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Subwords:
        from tokenizers import Tokenizer

        options = SubwordsOptions(
            column=spec.get("column"),
            model=spec["model"],
            lowercase=bool(spec["lowercase"]),
            max_length=spec.get("max_length"),
        )
        return cls(options, Tokenizer.from_str(spec["tokenizer_json"]))


class NumbersOptions(EncodingOptions):
    kind: Literal["numbers"] = "numbers"
    columns: list[str] | None = Field(
        None,
        min_length=1,
        description="long format (CSV, one row per step): the feature "
        "columns, with data.sequence_column and data.order_column; instead of 'column'",
    )
    standardize: bool = Field(
        True, description="subtract each feature's training mean and divide by its training standard deviation"
    )
    normalize: Literal["none", "series"] = Field(
        "none",
        description="series: first rescale each sequence's every feature to mean 0 and standard deviation 1 over "
        "its own steps (the UCR archive's convention: the shape is classified, not the level or scale); the whole "
        "sequence is needed before its first step is encoded",
    )


class Numbers(InputEncoding):
    """A vector of floats per step (``x`` float32 [batch, time, features]), each sequence first
    z-normalised over its own steps with ``normalize = "series"``, then standardised with the
    training split's per-feature mean and standard deviation."""

    Options = NumbersOptions
    reads = "numbers"
    token_aligned = True
    dtype = "float32"

    def __init__(self, options: NumbersOptions, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        super().__init__(options)
        self.mean, self.std = mean, std
        self._first: tuple[int, str] | None = None  # the first record's width and where it is, for errors

    def columns(self, default: str) -> list[str]:
        return list(self.options.columns) if self.options.columns else [self.options.column or default]

    def read(self, rows: Sequence[Any], default: str, path: Path, task: str) -> list[np.ndarray]:
        columns = self.columns(default)
        if self.options.columns:  # long format: each feature column holds the sequence's values, one per step
            values = [self._long(row, columns, path) for row in rows]
        else:
            values = [number_vectors(row[columns[0]], f"{path}:{row.line}", columns[0]) for row in rows]
        for row, value in zip(rows, values):  # every record of every split, the same width as the first one read
            if self._first is None:
                self._first = (value.shape[1], f"{path}:{row.line}")
            elif value.shape[1] != self._first[0]:
                raise DataError(
                    f"{path}:{row.line}: {value.shape[1]} numbers per step where {self._first[1]} has "
                    f"{self._first[0]}; every record needs the same features."
                )
        return values

    @staticmethod
    def _long(row: Any, columns: list[str], path: Path) -> np.ndarray:
        """One long-format sequence (each column a list, one number per row) → [time, features]."""
        from seqpipe.data import number

        if row.step_lines is None:
            raise DataError(
                f"{path}: input.columns reads long format (one row per step); set data.sequence_column and "
                "data.order_column, or name one column holding each sequence's vectors with input.column."
            )
        steps = []
        for t, line in enumerate(row.step_lines):
            step = type(row)({c: row[c][t] for c in columns})
            step.line = line
            steps.append([number(step, c, path, "input.columns are numeric features") for c in columns])
        return np.asarray(steps, dtype=np.float32)

    def fit(self, values: Sequence[np.ndarray]) -> None:
        widths = {v.shape[1] for v in values}
        if len(widths) != 1:
            raise DataError(
                f"the training records' number vectors have {len(widths)} different widths ({sorted(widths)}); "
                "every step of every record needs the same features."
            )
        steps = np.concatenate([self._normalized(v[: self.max_length]) for v in values])
        self.mean = steps.mean(axis=0) if self.options.standardize else np.zeros(steps.shape[1])
        std = steps.std(axis=0) if self.options.standardize else np.ones(steps.shape[1])
        self.std = np.where(std > 0, std, 1.0)  # a constant feature is centred, not divided by zero

    def encode(self, value: np.ndarray) -> np.ndarray:
        if value.shape[1] != len(self.mean):
            raise DataError(
                f"a sequence with {value.shape[1]} numbers per step where the model reads {len(self.mean)}; "
                "give every step the model's features."
            )
        return ((self._normalized(value[: self.max_length]) - self.mean) / self.std).astype(np.float32)

    def _normalized(self, value: np.ndarray) -> np.ndarray:
        """``value`` [time, features] in float64, z-normalised over its own steps with ``normalize = "series"``."""
        return z_normalised(value) if self.options.normalize == "series" else value.astype(np.float64)

    @property
    def size(self) -> int:
        return len(self.mean)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": "numbers",
            "dtype": "float32",
            "features": len(self.mean),
            "column": self.options.column,
            "columns": self.options.columns,
            "max_length": self.options.max_length,
            "normalize": self.options.normalize,
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "encode": 'keep the first max_length steps; with normalize = "series", first value[t][f] = (value[t][f] - '
            "m[f]) / s[f] with m, s the sequence's own mean and standard deviation of feature f over those "
            "steps (s = 1 where it is 0); then x[t, f] = (value[t][f] - mean[f]) / std[f]",
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Numbers:
        # exports written before normalize existed carry none: their sequences were read as they are
        options = NumbersOptions(
            column=spec.get("column"),
            columns=spec.get("columns"),
            max_length=spec.get("max_length"),
            normalize=spec.get("normalize", "none"),
        )
        return cls(options, np.asarray(spec["mean"], np.float64), np.asarray(spec["std"], np.float64))


BUILTIN_ENCODINGS = {"characters": Characters, "words": Words, "subwords": Subwords, "numbers": Numbers}


@hookimpl
def register_encodings(register):
    for name, encoding in BUILTIN_ENCODINGS.items():
        register(name, encoding)
