"""Many-to-many tagging, aligned: one label per step (the seed's "many-to-many labeling").

The steps are the pipeline's ``[input]``: words (default) or characters of a CoNLL file, embedded
inside the network so the step graph takes token ids; or a vector of numbers per step (a sensor
stream with per-step activity labels) from JSON Lines or long-format CSV. The step graph yields the
tag probabilities for the step just read; the sequence graph yields them for every step at once.
With a causal topology (single, stacked) a tag depends on the steps so far, which is what streaming
needs; a bidirectional topology reads the whole sequence and exports only the sequence graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from seqpipe import hookimpl
from seqpipe.baselines import window_tagger
from seqpipe.builtin.per_label import per_label_report
from seqpipe.contracts import Task, Topology
from seqpipe.data import LabelSpellings, read_conll
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.inputs import encode_all
from seqpipe.models import SequenceModel, hide_tokens, input_layer, input_width, pad_inputs, step_input
from seqpipe.onnx.native import sequence_graph

IGNORE = -100  # target at padded positions: no loss, no metric


def entity_scheme(labels: list[str]) -> str | None:
    """ "IOB2", "IOBES" or "BMES" when every tag but 'O' is a prefix (B/I; plus E/S; or B/M/E/S, M
    for inside, common in Chinese corpora) and a type, e.g. B-PER; None for other tag sets
    (part-of-speech tags)."""
    prefixes = {label.split("-", 1)[0] for label in labels if label != "O"}
    if not prefixes or any("-" not in label or not label.split("-", 1)[1] for label in labels if label != "O"):
        return None
    if prefixes <= {"B", "I"}:
        return "IOB2"
    if prefixes <= {"B", "I", "E", "S"}:
        return "IOBES"
    if prefixes <= {"B", "M", "E", "S"}:
        return "BMES"
    return None


class TagOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_column: str = Field(
        "tags",
        description="JSON Lines or long-format CSV: the column holding each step's tag "
        "(CoNLL files: the last field of each line)",
    )
    embedding_size: int = Field(
        64, ge=1, description="token embedding width (token inputs; number vectors are read as they are)"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on embeddings and on the head's input (training only)"
    )
    word_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="fraction of training tokens replaced by their unknown-word "
        "signature (words) or <unk> (augmentation; token inputs only)",
    )
    strong_baseline: bool = Field(
        True,
        description="also report logistic regression on word-window features on the test split "
        "(scikit-learn; seconds to a minute); false: skip it",
    )


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] token ids, or [B, T, F] features, 0-padded
    lengths: torch.Tensor  # [B]
    targets: torch.Tensor  # [B, T] tag ids, IGNORE past each length


class TagTask(Task):
    Options = TagOptions
    monitor = "accuracy"  # entity_f1 when the tags mark entities (IOB2, IOBES, BMES)
    monitor_mode = "max"
    metric_modes = {
        "accuracy": "max",
        "macro_f1": "max",
        "entity_f1": "max",
        "entity_precision": "max",
        "entity_recall": "max",
        "loss": "min",
    }
    sequence_y = "per_step"
    default_input = "words"
    input_column = "tokens"
    needs_token_aligned_input = True
    reads_word_characters = True

    @property
    def predict_example(self) -> str:
        """Inputs for `seqpipe predict` from this run's own test split, quoted for the shell: a test
        sentence's tokens (with --tokens, so they split as in the data), or a test stream as JSON."""
        import json
        import shlex

        test = self.words.get("test", [])
        if not test:
            return '"The jury praised the city ."'
        if self.encoding.reads == "numbers":  # the whole stream, each value at float32's shortest digits
            return shlex.quote(json.dumps([[float(str(v)) for v in step] for step in test[0]]))
        return "--tokens " + shlex.quote(" ".join(test[0]))

    example_pipeline = {"data": {"dataset": "brown-pos"}}

    def __init__(self, options: TagOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.encoding = data.input
        self.labels: list[str] = []
        self.examples: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.signature_of: torch.Tensor | None = None  # word id -> its signature id (word dropout)
        self.scheme: str | None = None  # "IOB2", "IOBES" or "BMES" when the tags mark entities
        self._baselines: dict[
            str, dict[str, float]
        ] = {}  # split -> the most-frequent-tag baseline's scores, computed once
        self.words: dict[str, list[Any]] = {}  # each split's token lists (or number arrays) as read
        self._window: dict[str, float] | None = None  # the strong baseline's test scores, computed once

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o = self.options
        self._spellings = LabelSpellings("tag", self.data.config.strip_labels, self.data.account)
        train, validation, test = self.data.splits(self._read)
        self._spellings.check()  # 'b-per' beside 'B-PER': one tag misspelt, never two
        self.labels = sorted({tag for _, tags in train for tag in tags})
        unseen = sorted({tag for _, tags in validation + test for tag in tags} - set(self.labels))
        if unseen:
            raise DataError(
                f"{self._spellings.site(unseen)}: tag(s) {', '.join(map(repr, unseen))} occur only outside the "
                "training "
                "split (the first example is on this line); add training sequences with them or merge them into other "
                "tags."
            )
        self.scheme = entity_scheme(self.labels)
        if self.scheme is not None:
            self.monitor = "entity_f1"  # token accuracy rewards tagging everything 'O' on entity data
        if o.word_dropout and self.encoding.dtype != "int64":
            raise DataError(
                f"{self.data.where}: task.options.word_dropout hides tokens, and input.kind = "
                f'"{self.encoding.kind}" reads number vectors; remove word_dropout.'
            )
        self.encoding.fit([value for value, _ in train])
        cut = self.encoding.max_length or None
        index = {tag: i for i, tag in enumerate(self.labels)}
        for name, part in zip(self.splits, (train, validation, test)):
            self.words[name] = [value[:cut] for value, _ in part]
            encoded = encode_all(self.encoding, [value for value, _ in part], self.data.account, "sequences")
            self.examples[name] = [(x, [index[t] for t in tags[: len(x)]]) for x, (_, tags) in zip(encoded, part)]
        self.signature_of = self._signature_table()
        return {name: len(part) for name, part in self.examples.items()}

    def _read(self, path) -> list[tuple[Any, list[str]]]:
        """(tokens or number vectors, tags) per sequence: CoNLL for text, JSON Lines or long-format CSV for numbers."""
        d, encoding = self.data.config, self.encoding
        if self.data.format == "conll":
            if encoding.reads != "text":
                raise DataError(
                    f'{self.data.where}: a CoNLL file holds tokens, and input.kind = "{encoding.kind}" reads '
                    "number vectors; give them as JSON Lines (a list of vectors and a list of tags per line) or "
                    "long-format CSV."
                )
            sentences = read_conll(path, self.data.where, comment_prefix=d.comment_prefix, account=self.data.account)
            tags = self._read_tags([[t for _, t in s] for s in sentences], [s.lines for s in sentences], path)
            return [([w for w, _ in s], t) for s, t in zip(sentences, tags)]
        if encoding.reads != "numbers":
            raise DataError(
                f"{self.data.where}: the tag task reads text from CoNLL files ('token<TAB>tag', blank line between "
                f"sentences), found format '{self.data.format}'; set data.format = \"conll\", or read number "
                'vectors with input.kind = "numbers".'
            )
        columns = encoding.columns(self.input_column)
        rows = self.data.records(
            path, [*columns, self.options.tag_column], step_columns=[*columns, self.options.tag_column]
        )
        values = encoding.read(rows, self.input_column, path, "tag")
        out = []
        for row, value in zip(rows, values):
            tags = row[self.options.tag_column]
            if not isinstance(tags, list) or len(tags) != len(value) or not all(isinstance(t, str) and t for t in tags):
                found = f"{len(tags)} tags" if isinstance(tags, list) else f"{type(tags).__name__} {str(tags)[:30]!r}"
                raise DataError(
                    f"{path}:{row.line}: column '{self.options.tag_column}' must list one tag (a string) per step: "
                    f"{len(value)} steps, found {found}."
                )
            out.append((value, tags))
        tags = self._read_tags(
            [t for _, t in out], [row.step_lines or [row.line] * len(t) for row, (_, t) in zip(rows, out)], path
        )
        return [(value, t) for (value, _), t in zip(out, tags)]

    def _read_tags(self, tags: list[list[str]], lines: list[list[int]], path) -> list[list[str]]:
        """Each sequence's ``tags`` (on ``lines`` of ``path``), noted for the spelling check (and stripped
        with data.strip_labels)."""
        read = iter(self._spellings.read([t for part in tags for t in part], path, [n for part in lines for n in part]))
        return [[next(read) for _ in part] for part in tags]

    def _signature_table(self) -> torch.Tensor | None:
        """Token id → the id word dropout shows instead: its signature (words), else <unk>."""
        from seqpipe.encoding import word_signature

        if self.encoding.dtype != "int64":
            return None
        vocabulary = getattr(self.encoding, "vocabulary", None)  # a plugin's token encoding may keep none: <unk> then
        if vocabulary is None:
            return torch.where(torch.arange(self.encoding.size) > 1, 1, torch.arange(self.encoding.size))
        symbols = vocabulary.symbols
        index = {s: i for i, s in enumerate(symbols)}
        words = self.encoding.kind == "words"
        return torch.tensor(
            [
                (index.get(word_signature(s), 1) if words else 1) if i > 1 and not s.startswith("<unk") else i
                for i, s in enumerate(symbols)
            ],
            dtype=torch.int64,
        )

    def collate(self, examples: list[Any]) -> Batch:
        return collate(examples)  # the module's collate below: the default batches() calls this one

    # -- model --------------------------------------------------------------------------------
    def build_model(
        self, make_topology: Callable[[int], Topology], initial_state: str = "zeros", initial_state_scale: float = 0.1
    ) -> SequenceModel:
        o = self.options
        topology = make_topology(input_width(self.encoding, o.embedding_size))
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        return SequenceModel(
            input_layer(self.encoding, o.embedding_size, o.dropout),
            topology,
            nn.Linear(topology.output_size, len(self.labels)),
            initial,
            output="softmax",
            per_step=True,
            dropout=o.dropout,
        )

    def loss(self, model: SequenceModel, batch: Batch) -> torch.Tensor:
        tokens = batch.tokens
        if self.options.word_dropout and model.training:
            # show some known words as unknown ones, so the signatures are trained on common words too
            tokens = hide_tokens(tokens, self.options.word_dropout, lambda ids: self.signature_of[ids])
        logits, _ = model(tokens, batch.lengths)  # [B, T, C]
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, split: str, batch_size: int = 256) -> dict[str, float]:
        model.eval()
        logits, targets = [], []
        for batch in self.batches(split, batch_size):
            out, _ = model(batch.tokens, batch.lengths)
            valid = batch.targets != IGNORE
            logits.append(out[valid])
            targets.append(batch.targets[valid])
        logits_all, target = torch.cat(logits), torch.cat(targets)
        preds = logits_all.argmax(dim=1)
        metrics = {**self._scores(preds, target), "loss": float(F.cross_entropy(logits_all, target))}
        if self.scheme is not None:
            metrics.update(self._entity_scores(preds.tolist(), split))
        metrics.update(self._baseline_scores(split, target))
        if split == "test" and self.options.strong_baseline and self.encoding.reads == "text":
            metrics.update(self._strong_baseline(target))
        return {**metrics, "tokens": len(target), "examples": len(self.examples[split])}

    @torch.no_grad()
    def write_report(self, model: SequenceModel, run_dir, log: Callable[[str], None]) -> dict[str, Any]:
        """Each tag's precision, recall, F1, tokens and predictions on the test split, and the
        confusion matrix: a token accuracy can hide a rare tag that is never predicted."""
        model.eval()
        truth, guess = [], []
        for batch in self.batches("test", 256):
            out, _ = model(batch.tokens, batch.lengths)
            valid = batch.targets != IGNORE
            truth.append(batch.targets[valid])
            guess.append(out[valid].argmax(dim=1))
        return per_label_report(
            torch.cat(truth).numpy(),
            torch.cat(guess).numpy(),
            self.labels,
            "tag",
            "add training sentences holding them",
            log,
        )

    def _strong_baseline(self, target: torch.Tensor) -> dict[str, float]:
        """Logistic regression on word-window features (see seqpipe.baselines), once."""
        if self._window is None:
            tags = {split: [t for _, t in self.examples[split]] for split in self.splits}

            def accuracy(truth: list[Any], guess: list[Any]) -> float:
                return float(np.mean(np.array(truth) == np.array(guess)))

            predicted = window_tagger(
                self.words["train"],
                tags["train"],
                self.words["validation"],
                tags["validation"],
                self.words["test"],
                accuracy,
            )
            flat = [t for s in predicted for t in s]
            self._window = {"window_accuracy": self._scores(torch.tensor(flat), target)["accuracy"]}
            if self.scheme is not None:
                self._window["window_entity_f1"] = self._entity_scores(flat, "test")["entity_f1"]
        return self._window

    def metric_names(self) -> dict[str, str]:
        names = super().metric_names()
        if self.scheme is None:
            for key in ("entity_f1", "entity_precision", "entity_recall"):
                names.pop(key)
        return names

    def _entity_scores(self, flat_preds: list[int], split: str) -> dict[str, float]:
        """Entity-level precision, recall and F1 (seqeval, scored as conlleval does): an entity counts
        only when its whole span and its type are right."""
        from seqeval.metrics import f1_score, precision_score, recall_score

        # BMES's M (inside) is IOBES's I: seqeval reads the rest alike
        names = [
            f"I-{label[2:]}" if self.scheme == "BMES" and label.startswith("M-") else label for label in self.labels
        ]
        truth, guess, at = [], [], 0
        for _, tags in self.examples[split]:
            truth.append([names[t] for t in tags])
            guess.append([names[t] for t in flat_preds[at : at + len(tags)]])
            at += len(tags)
        kwargs = {"zero_division": 0}
        return {
            "entity_precision": float(precision_score(truth, guess, **kwargs)),
            "entity_recall": float(recall_score(truth, guess, **kwargs)),
            "entity_f1": float(f1_score(truth, guess, **kwargs)),
        }

    def _scores(self, preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        n = len(self.labels)
        return {
            "accuracy": float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
            "macro_f1": float(multiclass_f1_score(preds, target, num_classes=n, average="macro")),
        }

    def _baseline_scores(self, split: str, target: torch.Tensor) -> dict[str, float]:
        """The most-frequent-tag baseline's token accuracy (and entity scores) on ``split``; the
        baseline does not change between epochs, so each split is scored once."""
        if split not in self._baselines:
            flat = [t for s in self._baseline_predictions(split) for t in s]
            scores = {"baseline_accuracy": self._scores(torch.tensor(flat), target)["accuracy"]}
            if self.scheme is not None:
                scores.update({f"baseline_{k}": v for k, v in self._entity_scores(flat, split).items()})
            self._baselines[split] = scores
        return self._baselines[split]

    def _baseline_predictions(self, split: str) -> list[list[int]]:
        """Most-frequent-tag baseline: each token id (a known word, or an unknown word's signature)
        gets the tag it most often has in training, ids never seen (and every number vector) the
        overall most frequent tag."""
        by_word: dict[int, Counter] = {}
        overall: Counter = Counter()
        tokens = self.encoding.dtype == "int64"
        word = (
            (lambda step: step[0]) if self.encoding.word_characters() else (lambda step: step)
        )  # [word id, its characters…]
        for ids, tags in self.examples["train"]:
            for w, t in zip(ids, tags):
                if tokens:
                    by_word.setdefault(word(w), Counter())[t] += 1
                overall[t] += 1
        best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
        fallback = overall.most_common(1)[0][0]
        return [[best.get(word(w), fallback) if tokens else fallback for w in ids] for ids, _ in self.examples[split]]

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return step_input(self.encoding, batch)

    def sequence_graph(self, model: SequenceModel, opset: int) -> onnx.ModelProto:
        """``x`` [batch, time] token ids (or [batch, time, features] floats) and ``lengths`` in;
        ``y`` [batch, time, tags] (the tag probabilities of every step) and ``state_out.*`` out."""
        return sequence_graph(model, opset, len(self.labels), "seqpipe_tag_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        batch = collate(self.examples[split][:limit])
        return batch.tokens.numpy(), batch.lengths.numpy()

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """Token accuracy and macro-F1 of an exported graph (any precision) on ``split``."""
        preds, target = [], []
        for start in range(0, len(self.examples[split]), 256):
            batch = collate(self.examples[split][start : start + 256])
            x, lengths = batch.tokens.numpy(), batch.lengths.numpy()
            y = runner.run(x, lengths)[0] if runner.kind == "sequence" else runner.run_padded(x, lengths)[0]
            valid = batch.targets != IGNORE
            preds.append(torch.from_numpy(y).argmax(dim=-1)[valid])
            target.append(batch.targets[valid])
        return self._scores(torch.cat(preds), torch.cat(target))

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": self.encoding.to_spec(),
            "output": {
                "kind": "probabilities",
                "labels": self.labels,
                "read": "y at each step: the tag of the step just read",
            },
        }


def collate(examples: list[tuple[Any, list[int]]]) -> Batch:
    tokens, lengths = pad_inputs([x for x, _ in examples])
    targets = torch.full((len(examples), int(lengths.max())), IGNORE, dtype=torch.int64)
    for row, (_, tags) in enumerate(examples):
        targets[row, : len(tags)] = torch.tensor(tags)
    return Batch(tokens, lengths, targets)


@hookimpl
def register_tasks(register):
    register("tag", TagTask)
