"""Predictions from exported ONNX files alone: no torch, no checkpoint, no pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqpipe.encoding import CharVocabulary
from seqpipe.errors import SeqpipeError
from seqpipe.runtime import SequenceRunner, StepRunner, open_export


def load_classifier(path: str | Path, device: str = "auto", precision: str = "fp32") -> StepRunner | SequenceRunner:
    """A run directory's sequence graph (one call per batch) or, failing that, its step graph."""
    runner = open_export(path, device=device, precision=precision)
    if runner.spec["task"] != "classify":
        raise SeqpipeError(f"{runner.path}: is a '{runner.spec['task']}' model; this seqpipe version predicts from 'classify' models.")
    return runner


def classify(runner: StepRunner | SequenceRunner, texts: list[str]) -> list[dict[str, Any]]:
    """Label and class probabilities for each text (a step graph is stepped to each text's end)."""
    vocabulary = CharVocabulary.from_spec(runner.spec["encoding"]["input"])
    labels = runner.spec["encoding"]["output"]["labels"]
    encoded = [vocabulary.encode(text) for text in texts]
    for number, ids in enumerate(encoded, start=1):
        if not ids:
            raise SeqpipeError(f"input {number} is empty; give at least one character to classify.")
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    tokens = np.zeros((len(encoded), int(lengths.max())), dtype=np.int64)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = ids
    last, _ = runner.final(tokens, lengths)
    results = []
    for text, probs in zip(texts, last):
        results.append({"text": text, "label": labels[int(np.argmax(probs))],
                        "probabilities": {label: float(p) for label, p in zip(labels, probs)}})
    return results
