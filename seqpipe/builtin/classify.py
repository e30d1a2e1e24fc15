"""Many-to-one classification: read a whole text, predict one label (the seed's sentiment example).

Characters are embedded inside the network, so the step graph takes token ids. As in the seed's
``VanillaRNN``, every step yields the running prediction (softmax over labels); the prediction for
a text is the one after its last character.
"""

from __future__ import annotations

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
from seqpipe.baselines import text_classifier
from seqpipe.data import batched, read_records, text_values
from seqpipe.encoding import CharVocabulary
from seqpipe.initial_state import InitialState
from seqpipe.models import SequenceModel, token_embedding
from seqpipe.errors import DataError


class ClassifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_column: str = Field("text", description="column holding the input text")
    label_column: str = Field("label", description="column holding the label")
    lowercase: bool = Field(False, description="fold text to lower case before encoding")
    max_length: int = Field(256, ge=1, description="characters kept from the start of each text")
    min_char_count: int = Field(2, ge=1, description="rarer training characters become <unk>")
    embedding_size: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings and on the head's input (training only)")
    balance_classes: bool = Field(False, description="weight the loss by inverse label frequency (helps macro-F1 on skewed data)")
    char_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of training characters replaced by <unk> (augmentation)")
    labels: list[str] | None = Field(None, description="allowed labels in output order; default: those in the data, sorted")
    strong_baseline: bool = Field(True, description="also report character n-gram TF-IDF + logistic regression on the test split "
                                  "(scikit-learn; a few seconds on small data); false: skip it")


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] int64, padded with 0
    lengths: torch.Tensor  # [B] int64, all >= 1
    targets: torch.Tensor  # [B] int64


class ClassifierModel(SequenceModel):
    """Characters embedded → topology → linear head → softmax after the last valid step."""

    def __init__(self, vocab_size: int, embedding_size: int, topology: Topology, num_labels: int, dropout: float = 0.0,
                 initial_state: str = "zeros", initial_state_scale: float = 0.1) -> None:
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        super().__init__(token_embedding(vocab_size, embedding_size, dropout), topology, nn.Linear(topology.output_size, num_labels),
                         initial, output="softmax", per_step=False, dropout=dropout)


class ClassifyTask(Task):
    Options = ClassifyOptions
    monitor = "macro_f1"
    monitor_mode = "max"
    example_pipeline = {"data": {"dataset": "spam-assassin"}}

    def __init__(self, options: ClassifyOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.vocabulary: CharVocabulary | None = None
        self.labels: list[str] = []
        self.examples: dict[str, list[tuple[list[int], int]]] = {}
        self.texts: dict[str, list[str]] = {}
        self.class_weights: torch.Tensor | None = None
        self._tfidf: dict[str, float] | None = None  # the strong baseline's test scores, computed once

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o = self.options
        train, validation, test = self.data.splits(self._read, key=lambda p: p[1])
        pairs = train + validation + test
        found = sorted({label for _, label in pairs})
        if o.labels is not None:
            unknown = sorted(set(found) - set(o.labels))
            if unknown:
                raise DataError(f"{self.data.path}: label(s) {', '.join(map(repr, unknown))} not in task.options.labels {o.labels}; add them or fix the data.")
            self.labels = list(o.labels)
        else:
            self.labels = found
        if len(self.labels) < 2:
            raise DataError(f"{self.data.path}: column '{o.label_column}' holds a single label {found}; classification needs at least two.")
        self.data.account.add("truncated_texts", sum(len(t) > o.max_length for t, _ in pairs),
                              f"texts cut to task.options.max_length = {o.max_length} characters (raise it to keep them whole)")
        self.vocabulary = CharVocabulary.fit((t for t, _ in train), lowercase=o.lowercase, max_length=o.max_length, min_count=o.min_char_count)
        index = {label: i for i, label in enumerate(self.labels)}
        for name, part in zip(self.splits, (train, validation, test)):
            self.texts[name] = [t for t, _ in part]
            self.examples[name] = [(self.vocabulary.encode(t), index[label]) for t, label in part]
        counts = torch.bincount(torch.tensor([y for _, y in self.examples["train"]]), minlength=len(self.labels)).float()
        # inverse frequency, normalised so a balanced dataset gets weight 1 for every label
        self.class_weights = (counts.sum() / (len(self.labels) * counts.clamp(min=1))) if o.balance_classes else None
        return {name: len(part) for name, part in self.examples.items()}

    def _read(self, path) -> list[tuple[str, str]]:
        o = self.options
        rows = read_records(path, self.data.format, [o.text_column, o.label_column], self.data.where)
        return list(zip(text_values(rows, o.text_column, path, "classify"), (str(r[o.label_column]) for r in rows)))

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        return batched(self.examples[split], batch_size, collate, shuffle=shuffle, generator=generator)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, make_topology: Callable[[int], Topology], initial_state: str = "zeros",
                    initial_state_scale: float = 0.1) -> ClassifierModel:
        return ClassifierModel(len(self.vocabulary), self.options.embedding_size, make_topology(self.options.embedding_size),
                               len(self.labels), self.options.dropout, initial_state, initial_state_scale)

    def loss(self, model: ClassifierModel, batch: Batch) -> torch.Tensor:
        tokens = batch.tokens
        if self.options.char_dropout and model.training:
            # hide random characters so the model cannot lean on any single one; padding stays padding
            hide = (torch.rand(tokens.shape) < self.options.char_dropout) & (tokens != self.vocabulary.pad_id)
            tokens = tokens.masked_fill(hide, self.vocabulary.unk_id)
        logits, _ = model(tokens, batch.lengths)
        return F.cross_entropy(logits, batch.targets, weight=self.class_weights)

    @torch.no_grad()
    def evaluate(self, model: ClassifierModel, split: str, batch_size: int = 256) -> dict[str, float]:
        model.eval()
        logits, targets = [], []
        for batch in self.batches(split, batch_size):
            logits.append(model(batch.tokens, batch.lengths)[0])
            targets.append(batch.targets)
        logits_all, target = torch.cat(logits), torch.cat(targets)
        preds = logits_all.argmax(dim=1)
        n = len(self.labels)
        return {
            "loss": float(F.cross_entropy(logits_all, target)),
            "accuracy": float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
            "macro_f1": float(multiclass_f1_score(preds, target, num_classes=n, average="macro")),
            **self._majority_baseline(target),
            **(self._strong_baseline() if split == "test" and self.options.strong_baseline else {}),
            "examples": len(target),
        }

    def _strong_baseline(self) -> dict[str, float]:
        """Character 1-5-gram TF-IDF + logistic regression, regularisation chosen on validation macro-F1."""
        from sklearn.metrics import accuracy_score, f1_score

        if self._tfidf is None:
            labels = {split: [y for _, y in self.examples[split]] for split in self.splits}
            predicted = text_classifier(self.texts["train"], labels["train"], self.texts["validation"], labels["validation"],
                                        self.texts["test"], lambda t, p: f1_score(t, p, average="macro"), self.options.lowercase)
            self._tfidf = {"tfidf_accuracy": float(accuracy_score(labels["test"], predicted)),
                           "tfidf_macro_f1": float(f1_score(labels["test"], predicted, average="macro",
                                                            labels=list(range(len(self.labels))), zero_division=0))}
        return self._tfidf

    def _majority_baseline(self, target: torch.Tensor) -> dict[str, float]:
        """Always the training split's most frequent label: the floor a model must clear."""
        majority = torch.full_like(target, int(torch.bincount(torch.tensor([y for _, y in self.examples["train"]])).argmax()))
        n = len(self.labels)
        return {"majority_accuracy": float(multiclass_accuracy(majority, target, num_classes=n, average="micro")),
                "majority_macro_f1": float(multiclass_f1_score(majority, target, num_classes=n, average="macro"))}

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return torch.ones(batch, dtype=torch.int64)  # [B] token ids

    def sequence_graph(self, model: ClassifierModel, opset: int) -> onnx.ModelProto:
        """Whole texts at once: ``x`` [batch, time] ids and ``lengths`` [batch] in; ``y`` [batch, labels]
        (probabilities after each text's last token) and ``state_out.*`` [batch, slots, size] out."""
        return sequence_graph(model, opset, len(self.labels), "seqpipe_classify_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        batch = collate(self.examples[split][:limit])
        return batch.tokens.numpy(), batch.lengths.numpy()

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """Accuracy and macro-F1 of an exported graph (any precision) on ``split``, via onnxruntime."""
        x, lengths = self.parity_inputs(split, len(self.examples[split]))
        probs = []
        for start in range(0, len(x), 256):
            probs.append(runner.final(x[start:start + 256], lengths[start:start + 256])[0])
        preds = torch.from_numpy(np.concatenate(probs)).argmax(dim=1)
        target = torch.tensor([label for _, label in self.examples[split]])
        n = len(self.labels)
        return {"accuracy": float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
                "macro_f1": float(multiclass_f1_score(preds, target, num_classes=n, average="macro"))}

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": {"dtype": "int64", **self.vocabulary.to_spec()},
            "output": {"kind": "probabilities", "labels": self.labels, "read": "y after each sequence's last token"},
        }


def collate(examples: list[tuple[list[int], int]]) -> Batch:
    lengths = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.int64)
    tokens = torch.zeros(len(examples), int(lengths.max()), dtype=torch.int64)
    for row, (ids, _) in enumerate(examples):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return Batch(tokens, lengths, torch.tensor([label for _, label in examples], dtype=torch.int64))


@hookimpl
def register_tasks(register):
    register("classify", ClassifyTask)
