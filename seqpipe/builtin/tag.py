"""Many-to-many tagging, aligned: one label per token (the seed's "many-to-many labeling").

Words are embedded inside the network, so the step graph takes word ids and yields the tag
probabilities for the word just read; the sequence graph yields them for every word at once. With
a causal topology (single, stacked) a tag depends on the words so far, which is what streaming
needs; a bidirectional topology reads the whole sentence and exports only the sequence graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
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
from seqpipe.onnx.native import sequence_graph
from seqpipe.contracts import Task, Topology
from seqpipe.baselines import window_tagger
from seqpipe.data import batched, read_conll
from seqpipe.encoding import WordVocabulary
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel, token_embedding

IGNORE = -100  # target at padded positions: no loss, no metric


def entity_scheme(labels: list[str]) -> str | None:
    """"IOB2", "IOBES" or "BMES" when every tag but 'O' is a prefix (B/I; plus E/S; or B/M/E/S, M
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
    lowercase: bool = Field(False, description="fold words to lower case (capitals still shape unknown-word signatures)")
    min_word_count: int = Field(2, ge=1, description="rarer training words are encoded by their shape/suffix signature")
    max_length: int = Field(128, ge=1, description="tokens kept from the start of each sentence")
    embedding_size: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings and on the head's input (training only)")
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of training words replaced by their signature (augmentation)")
    strong_baseline: bool = Field(True, description="also report logistic regression on word-window features on the test split "
                                  "(scikit-learn; seconds to a minute); false: skip it")


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] word ids, 0-padded
    lengths: torch.Tensor  # [B]
    targets: torch.Tensor  # [B, T] tag ids, IGNORE past each length


class TagTask(Task):
    Options = TagOptions
    monitor = "accuracy"  # entity_f1 when the tags mark entities (IOB2, IOBES, BMES)
    monitor_mode = "max"
    metric_modes = {"accuracy": "max", "macro_f1": "max", "entity_f1": "max", "entity_precision": "max",
                    "entity_recall": "max", "loss": "min"}
    sequence_y = "per_step"
    predict_example = '"The jury praised the city ."'
    example_pipeline = {"data": {"dataset": "brown-pos"}}

    def __init__(self, options: TagOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.vocabulary: WordVocabulary | None = None
        self.labels: list[str] = []
        self.examples: dict[str, list[tuple[list[int], list[int]]]] = {}
        self.signature_of: torch.Tensor | None = None  # word id -> its signature id (word dropout)
        self.scheme: str | None = None  # "IOB2", "IOBES" or "BMES" when the tags mark entities
        self._baselines: dict[str, dict[str, float]] = {}  # split -> the most-frequent-tag baseline's scores, computed once
        self.words: dict[str, list[list[str]]] = {}
        self._window: dict[str, float] | None = None  # the strong baseline's test scores, computed once

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o, d = self.options, self.data.config
        if self.data.format != "conll":
            raise DataError(f"{self.data.where}: the tag task reads CoNLL-style files ('token<TAB>tag', blank line between "
                            f"sentences), found format '{self.data.format}'; set data.format = \"conll\".")
        train, validation, test = self.data.splits(
            lambda path: read_conll(path, self.data.where, comment_prefix=d.comment_prefix, account=self.data.account))
        long = [s for s in train + validation + test if len(s) > o.max_length]
        self.data.account.add("truncated_sentences", len(long), f"sentences cut to task.options.max_length = {o.max_length} tokens "
                              f"({sum(len(s) - o.max_length for s in long):,} tokens neither trained on nor scored; raise it to keep them)")
        train, validation, test = ([s[: o.max_length] for s in part] for part in (train, validation, test))
        self.labels = sorted({tag for s in train for _, tag in s})
        unseen = sorted({tag for s in validation + test for _, tag in s} - set(self.labels))
        if unseen:
            raise DataError(f"{self.data.path}: tag(s) {', '.join(unseen)} occur only outside the training split; "
                            "add training sentences with them or merge them into other tags.")
        self.scheme = entity_scheme(self.labels)
        if self.scheme is not None:
            self.monitor = "entity_f1"  # token accuracy rewards tagging everything 'O' on entity data
        self.vocabulary = WordVocabulary.fit(([w for w, _ in s] for s in train), lowercase=o.lowercase, min_count=o.min_word_count)
        index = {tag: i for i, tag in enumerate(self.labels)}
        for name, part in zip(self.splits, (train, validation, test)):
            self.words[name] = [[w for w, _ in s] for s in part]
            self.examples[name] = [(self.vocabulary.encode([w for w, _ in s]), [index[t] for _, t in s]) for s in part]
        self.signature_of = self._signature_table()
        return {name: len(part) for name, part in self.examples.items()}

    def _signature_table(self) -> torch.Tensor:
        from seqpipe.encoding import word_signature

        index = {s: i for i, s in enumerate(self.vocabulary.symbols)}
        return torch.tensor([index.get(word_signature(s), 1) if i > 1 and not s.startswith("<unk") else i
                             for i, s in enumerate(self.vocabulary.symbols)], dtype=torch.int64)

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        return batched(self.examples[split], batch_size, collate, shuffle=shuffle, generator=generator)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, make_topology: Callable[[int], Topology], initial_state: str = "zeros",
                    initial_state_scale: float = 0.1) -> SequenceModel:
        o = self.options
        topology = make_topology(o.embedding_size)
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        return SequenceModel(token_embedding(len(self.vocabulary), o.embedding_size, o.dropout), topology,
                             nn.Linear(topology.output_size, len(self.labels)), initial, output="softmax", per_step=True,
                             dropout=o.dropout)

    def loss(self, model: SequenceModel, batch: Batch) -> torch.Tensor:
        tokens = batch.tokens
        if self.options.word_dropout and model.training:
            # show some known words as unknown ones, so the signatures are trained on common words too
            hide = (torch.rand(tokens.shape) < self.options.word_dropout) & (tokens != 0)
            tokens = torch.where(hide, self.signature_of[tokens], tokens)
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
        if split == "test" and self.options.strong_baseline:
            metrics.update(self._strong_baseline(target))
        return {**metrics, "tokens": len(target), "examples": len(self.examples[split])}

    def _strong_baseline(self, target: torch.Tensor) -> dict[str, float]:
        """Logistic regression on word-window features (see seqpipe.baselines), once."""
        if self._window is None:
            tags = {split: [t for _, t in self.examples[split]] for split in self.splits}
            accuracy = lambda truth, guess: float(np.mean(np.array(truth) == np.array(guess)))
            predicted = window_tagger(self.words["train"], tags["train"], self.words["validation"], tags["validation"],
                                      self.words["test"], accuracy)
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
        names = [f"I-{label[2:]}" if self.scheme == "BMES" and label.startswith("M-") else label for label in self.labels]
        truth, guess, at = [], [], 0
        for _, tags in self.examples[split]:
            truth.append([names[t] for t in tags])
            guess.append([names[t] for t in flat_preds[at: at + len(tags)]])
            at += len(tags)
        kwargs = {"zero_division": 0}
        return {"entity_precision": float(precision_score(truth, guess, **kwargs)),
                "entity_recall": float(recall_score(truth, guess, **kwargs)),
                "entity_f1": float(f1_score(truth, guess, **kwargs))}

    def _scores(self, preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        n = len(self.labels)
        return {"accuracy": float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
                "macro_f1": float(multiclass_f1_score(preds, target, num_classes=n, average="macro"))}

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
        """Most-frequent-tag baseline: each word id (a known word, or an unknown word's signature)
        gets the tag it most often has in training, ids never seen the overall most frequent tag."""
        by_word: dict[int, Counter] = {}
        overall: Counter = Counter()
        for ids, tags in self.examples["train"]:
            for w, t in zip(ids, tags):
                by_word.setdefault(w, Counter())[t] += 1
                overall[t] += 1
        best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
        fallback = overall.most_common(1)[0][0]
        return [[best.get(w, fallback) for w in ids] for ids, _ in self.examples[split]]

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return torch.ones(batch, dtype=torch.int64)  # [B] word ids

    def sequence_graph(self, model: SequenceModel, opset: int) -> onnx.ModelProto:
        """``x`` [batch, time] word ids and ``lengths`` in; ``y`` [batch, time, tags] (the tag
        probabilities of every word) and ``state_out.*`` out."""
        return sequence_graph(model, opset, len(self.labels), "seqpipe_tag_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        batch = collate(self.examples[split][:limit])
        return batch.tokens.numpy(), batch.lengths.numpy()

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """Token accuracy and macro-F1 of an exported graph (any precision) on ``split``."""
        preds, target = [], []
        for start in range(0, len(self.examples[split]), 256):
            batch = collate(self.examples[split][start:start + 256])
            x, lengths = batch.tokens.numpy(), batch.lengths.numpy()
            y = runner.run(x, lengths)[0] if runner.kind == "sequence" else runner.run_padded(x, lengths)[0]
            valid = batch.targets != IGNORE
            preds.append(torch.from_numpy(y).argmax(dim=-1)[valid])
            target.append(batch.targets[valid])
        return self._scores(torch.cat(preds), torch.cat(target))

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": {"dtype": "int64", **self.vocabulary.to_spec()},
            "output": {"kind": "probabilities", "labels": self.labels, "read": "y at each step: the tag of the word just read"},
        }


def collate(examples: list[tuple[list[int], list[int]]]) -> Batch:
    lengths = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.int64)
    tokens = torch.zeros(len(examples), int(lengths.max()), dtype=torch.int64)
    targets = torch.full((len(examples), int(lengths.max())), IGNORE, dtype=torch.int64)
    for row, (ids, tags) in enumerate(examples):
        tokens[row, : len(ids)] = torch.tensor(ids)
        targets[row, : len(tags)] = torch.tensor(tags)
    return Batch(tokens, lengths, targets)


@hookimpl
def register_tasks(register):
    register("tag", TagTask)
