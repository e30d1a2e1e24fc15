"""Many-to-one classification: read a whole sequence, predict one label (the seed's sentiment example).

The sequence is the pipeline's ``[input]``: text as characters, words or subwords (embedded inside
the network, so the graphs take token ids), or a vector of numbers per step (the graphs take
float32 features). As in the seed's ``VanillaRNN``, every step yields the running prediction
(softmax over labels); the prediction for a sequence is the one after its last step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from seqpipe import hookimpl
from seqpipe.baselines import nearest_neighbour, summary_classifier, text_classifier
from seqpipe.builtin.per_label import per_label_report
from seqpipe.contracts import Task, Topology
from seqpipe.data import LabelSpellings
from seqpipe.errors import DataError
from seqpipe.initial_state import InitialState
from seqpipe.inputs import encode_all
from seqpipe.models import UNK_ID, SequenceModel, hide_tokens, input_layer, input_width, pad_inputs, step_input
from seqpipe.onnx.native import sequence_graph
from seqpipe.pooling import Pooling


class ClassifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_column: str = Field("label", description="column holding the label")
    embedding_size: int = Field(
        32, ge=1, description="token embedding width (token inputs; number vectors are read as they are)"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on embeddings and on the head's input (training only)"
    )
    balance_classes: bool = Field(
        False, description="weight the loss by inverse label frequency (helps macro-F1 on skewed data)"
    )
    token_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="fraction of training tokens (characters, words, subwords) "
        "replaced by <unk> (augmentation; token inputs only)",
    )
    labels: list[str] | None = Field(
        None, description="allowed labels in output order; default: those in the data, sorted"
    )
    pooling: Literal["last", "mean", "max", "attention"] = Field(
        "last",
        description="what the head reads: the output after the last step, or the mean or maximum of every step's "
        "output (kept as running statistics, so the step graph streams them), or an attention-weighted sum (sequence "
        "graph only)",
    )
    strong_baseline: bool = Field(
        True,
        description="also report a classical model on the test split (scikit-learn, seconds): "
        "character n-gram TF-IDF + logistic regression for text; for numbers, 1-nearest-neighbour "
        "(Euclidean, z-normalised series) and logistic regression on per-feature summaries; false: skip it",
    )


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] int64 ids padded with 0, or [B, T, F] float32 features padded with 0
    lengths: torch.Tensor  # [B] int64, all >= 1
    targets: torch.Tensor  # [B] int64


class ClassifierModel(SequenceModel):
    """Input (tokens embedded, or number vectors as they are) → topology → pooling (the last valid
    step's output by default, or mean, max, attention) → linear head → softmax."""

    def __init__(
        self,
        embed: nn.Module,
        topology: Topology,
        num_labels: int,
        dropout: float = 0.0,
        initial_state: str = "zeros",
        initial_state_scale: float = 0.1,
        pooling: str = "last",
    ) -> None:
        initial = InitialState(initial_state, topology.state_shapes, initial_state_scale)
        head = nn.Linear(topology.output_size, num_labels)
        super().__init__(
            embed,
            topology,
            head,
            initial,
            output="softmax",
            per_step=False,
            dropout=dropout,
            pooling=None if pooling == "last" else Pooling(pooling, topology.output_size),
        )


class ClassifyTask(Task):
    Options = ClassifyOptions
    monitor = "macro_f1"
    monitor_mode = "max"
    trivial_baselines = ("majority",)
    reads_word_characters = True  # words with input.characters: a character CNN per word (seqpipe.word_characters)
    example_pipeline = {"data": {"dataset": "spam-assassin"}}

    @classmethod
    def no_step_graph(cls, options: ClassifyOptions) -> str | None:
        if options.pooling == "attention":
            return (
                'task.options.pooling = "attention" weighs every step by the whole sequence, so it cannot stream '
                '("mean" and "max" can)'
            )
        return None

    @property
    def predict_example(self) -> str:
        """Inputs for `seqpipe predict` from this run's own test split, quoted for the shell: two
        texts, or one whole sequence of number vectors, as JSON (its label depends on every step)."""
        import json
        import shlex

        test = self.values.get("test", [])
        if not test:
            return '"some text"'
        if self.encoding.reads == "numbers":
            return shlex.quote(
                json.dumps([[float(str(v)) for v in step] for step in test[0]])
            )  # float32's shortest digits
        return " ".join(shlex.quote(t) for t in test[:2])

    def __init__(self, options: ClassifyOptions, data: Any) -> None:
        self.options = options
        self.data = data
        self.encoding = data.input
        self.labels: list[str] = []
        self.examples: dict[str, list[tuple[Any, int]]] = {}
        self.values: dict[str, list[Any]] = {}  # each split's values as read (texts or number arrays), for baselines
        self.class_weights: torch.Tensor | None = None
        self._tfidf: dict[str, float] | None = None  # the strong baseline's test scores, computed once

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        o = self.options
        self._spellings = LabelSpellings("label", self.data.config.strip_labels, self.data.account)
        train, validation, test = self.data.splits(self._read, key=lambda p: p[1])
        self._spellings.check()  # ' ham' beside 'ham', 'Ham' beside 'ham': one class misspelt, never two
        pairs = train + validation + test
        found = sorted({label for _, label in pairs})
        unseen = sorted({label for _, label in validation + test} - {label for _, label in train})
        if unseen:  # a class the model is never trained on, often a typo ('Walkng')
            raise DataError(
                f"{self._spellings.site(unseen)}: label(s) {', '.join(map(repr, unseen))} occur only outside the "
                "training "
                "split (the first example is on this line); fix them in the data (a typo?) or add training examples "
                "with them."
            )
        if o.labels is not None:
            unknown = sorted(set(found) - set(o.labels))
            if unknown:
                raise DataError(
                    f"{self.data.path}: label(s) {', '.join(map(repr, unknown))} not in task.options.labels "
                    f"{o.labels}; add them or fix the data."
                )
            self.labels = list(o.labels)
        else:
            self.labels = found
        if len(self.labels) < 2:
            raise DataError(
                f"{self.data.path}: column '{o.label_column}' holds a single label {found}; classification needs at "
                "least two."
            )
        if o.token_dropout and self.encoding.dtype != "int64":
            raise DataError(
                f"{self.data.where}: task.options.token_dropout hides tokens, and input.kind = "
                f'"{self.encoding.kind}" reads number vectors; remove token_dropout.'
            )
        self.encoding.fit([v for v, _ in train])
        index = {label: i for i, label in enumerate(self.labels)}
        what = "sequences" if self.encoding.reads == "numbers" else "texts"
        for name, part in zip(self.splits, (train, validation, test)):
            self.values[name] = [v for v, _ in part]
            encoded = encode_all(self.encoding, self.values[name], self.data.account, what)
            self.examples[name] = [(x, index[label]) for x, (_, label) in zip(encoded, part)]
        counts = torch.bincount(
            torch.tensor([y for _, y in self.examples["train"]]), minlength=len(self.labels)
        ).float()
        # inverse frequency, normalised so a balanced dataset gets weight 1 for every label
        self.class_weights = (counts.sum() / (len(self.labels) * counts.clamp(min=1))) if o.balance_classes else None
        return {name: len(part) for name, part in self.examples.items()}

    def validation_label_counts(self) -> dict[str, int]:
        counts = np.bincount([y for _, y in self.examples["validation"]], minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts)}

    def _read(self, path) -> list[tuple[Any, str]]:
        o, encoding = self.options, self.encoding
        columns = encoding.columns(self.input_column)
        rows = self.data.records(path, [*columns, o.label_column], step_columns=columns)
        labels = self._spellings.read([str(r[o.label_column]) for r in rows], path, [r.line for r in rows])
        return list(zip(encoding.read(rows, self.input_column, path, "classify"), labels))

    def collate(self, examples: list[Any]) -> Batch:
        return collate(examples)  # the module's collate below: the default batches() calls this one

    # -- model --------------------------------------------------------------------------------
    def build_model(
        self, make_topology: Callable[[int], Topology], initial_state: str = "zeros", initial_state_scale: float = 0.1
    ) -> ClassifierModel:
        o = self.options
        topology = make_topology(input_width(self.encoding, o.embedding_size))
        return ClassifierModel(
            input_layer(self.encoding, o.embedding_size, o.dropout),
            topology,
            len(self.labels),
            o.dropout,
            initial_state,
            initial_state_scale,
            o.pooling,
        )

    def loss(self, model: ClassifierModel, batch: Batch) -> torch.Tensor:
        tokens = batch.tokens
        if self.options.token_dropout and model.training:
            # hide random tokens so the model cannot lean on any single one; padding (id 0) stays padding
            tokens = hide_tokens(tokens, self.options.token_dropout, lambda ids: torch.full_like(ids, UNK_ID))
        logits, _ = model(tokens, batch.lengths)
        return F.cross_entropy(logits, batch.targets, weight=self.class_weights)

    @torch.no_grad()
    def _logits(self, model: ClassifierModel, split: str, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits on every example of ``split``, in order, and the true label ids."""
        model.eval()
        logits, targets = [], []
        for batch in self.batches(split, batch_size):
            logits.append(model(batch.tokens, batch.lengths)[0])
            targets.append(batch.targets)
        return torch.cat(logits), torch.cat(targets)

    def evaluate(self, model: ClassifierModel, split: str, batch_size: int = 256) -> dict[str, float]:
        logits_all, target = self._logits(model, split, batch_size)
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
        """Classical models: character 1-5-gram TF-IDF + logistic regression for text (``tfidf_*``);
        for number vectors, 1-nearest-neighbour on z-normalised series (``nearest_*``) and logistic
        regression on each feature's summary statistics (``summary_*``). Logistic regression's
        regularisation is chosen on validation macro-F1."""
        from sklearn.metrics import f1_score

        if self._tfidf is None:
            labels = {split: [y for _, y in self.examples[split]] for split in self.splits}
            score = lambda t, p: f1_score(t, p, average="macro")  # noqa: E731
            if self.encoding.reads == "numbers":
                # the model is trained on train alone; so are the baselines (validation only picks C)
                predictions = {
                    "summary": summary_classifier(
                        self.values["train"],
                        labels["train"],
                        self.values["validation"],
                        labels["validation"],
                        self.values["test"],
                        score,
                    ),
                    "nearest": nearest_neighbour(self.values["train"], labels["train"], self.values["test"]),
                }
            else:
                predictions = {
                    "tfidf": text_classifier(
                        self.values["train"],
                        labels["train"],
                        self.values["validation"],
                        labels["validation"],
                        self.values["test"],
                        score,
                        getattr(self.encoding.options, "lowercase", False),
                    )
                }
            # scored exactly as the model is (torchmetrics), so the figures compare
            truth, n = torch.tensor(labels["test"]), len(self.labels)
            self._tfidf = {}
            for name, predicted in predictions.items():
                guess = torch.tensor(predicted)
                self._tfidf[f"{name}_accuracy"] = float(
                    multiclass_accuracy(guess, truth, num_classes=n, average="micro")
                )
                self._tfidf[f"{name}_macro_f1"] = float(
                    multiclass_f1_score(guess, truth, num_classes=n, average="macro")
                )
        return self._tfidf

    def _majority_baseline(self, target: torch.Tensor) -> dict[str, float]:
        """Always the training split's most frequent label: the floor a model must clear."""
        majority = torch.full_like(
            target, int(torch.bincount(torch.tensor([y for _, y in self.examples["train"]])).argmax())
        )
        n = len(self.labels)
        return {
            "majority_accuracy": float(multiclass_accuracy(majority, target, num_classes=n, average="micro")),
            "majority_macro_f1": float(multiclass_f1_score(majority, target, num_classes=n, average="macro")),
        }

    def write_report(self, model: ClassifierModel, run_dir, log: Callable[[str], None]) -> dict[str, Any]:
        """Each label's precision, recall, F1, examples and predictions on the test split, and (up to
        :data:`~seqpipe.builtin.per_label.CONFUSION_LABELS` labels) the confusion matrix, rows true labels, columns
        predicted:
        a macro-F1 can hide a label that is never predicted."""
        logits, target = self._logits(model, "test")
        remedy = "add training examples of them" + (
            "" if self.options.balance_classes else ", or set task.options.balance_classes = true"
        )
        return per_label_report(target.numpy(), logits.argmax(dim=1).numpy(), self.labels, "label", remedy, log)

    # -- export -------------------------------------------------------------------------------
    def step_example(self, batch: int = 2) -> torch.Tensor:
        return step_input(self.encoding, batch)

    def sequence_graph(self, model: ClassifierModel, opset: int) -> onnx.ModelProto:
        """Whole sequences at once: ``x`` [batch, time] ids (or [batch, time, features] floats) and
        ``lengths`` [batch] in; ``y`` [batch, labels] (probabilities after each sequence's last step)
        and ``state_out.*`` [batch, slots, size] out."""
        return sequence_graph(model, opset, len(self.labels), "seqpipe_classify_sequence")

    def parity_inputs(self, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        batch = collate(self.examples[split][:limit])
        return batch.tokens.numpy(), batch.lengths.numpy()

    def evaluate_onnx(self, runner, split: str) -> dict[str, float]:
        """Accuracy and macro-F1 of an exported graph (any precision) on ``split``, via onnxruntime."""
        x, lengths = self.parity_inputs(split, len(self.examples[split]))
        probs = []
        for start in range(0, len(x), 256):
            probs.append(runner.final(x[start : start + 256], lengths[start : start + 256])[0])
        preds = torch.from_numpy(np.concatenate(probs)).argmax(dim=1)
        target = torch.tensor([label for _, label in self.examples[split]])
        n = len(self.labels)
        return {
            "accuracy": float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
            "macro_f1": float(multiclass_f1_score(preds, target, num_classes=n, average="macro")),
        }

    def encoding_spec(self) -> dict[str, Any]:
        return {
            "input": self.encoding.to_spec(),
            "output": {"kind": "probabilities", "labels": self.labels, "read": "y after each sequence's last step"},
        }


def collate(examples: list[tuple[Any, int]]) -> Batch:
    x, lengths = pad_inputs([x for x, _ in examples])
    return Batch(x, lengths, torch.tensor([label for _, label in examples], dtype=torch.int64))


@hookimpl
def register_tasks(register):
    register("classify", ClassifyTask)
