"""Predictions from exported ONNX files alone: no torch, no checkpoint, no pipeline file.

``predict(path, inputs, options)`` reads the task from the file's ``seqpipe.spec`` and hands the
inputs to that task's predictor; each returns one JSON-able dict per result, with a ``line`` for
people.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqpipe.encoding import CharVocabulary, WordVocabulary, split_words
from seqpipe.errors import SeqpipeError
from seqpipe.runtime import SequenceRunner, StepRunner, open_export


@dataclass(frozen=True)
class PredictOptions:
    device: str = "auto"
    precision: str = "fp32"
    steps: int = 5  # forecast: values ahead
    condition: str | None = None  # generate: the label that starts the state
    count: int = 5  # generate: how many samples
    temperature: float = 0.0  # generate/seq2seq: 0 = greedy, else sampling at this temperature
    beam: int = 1  # generate/seq2seq: beam width (> 1: beam search)
    seed: int = 0  # sampling
    max_length: int | None = None  # generate/seq2seq: default from the file's spec


def load_classifier(path: str | Path, device: str = "auto", precision: str = "fp32") -> StepRunner | SequenceRunner:
    """A run directory's sequence graph (one call per batch) or, failing that, its step graph."""
    runner = open_export(path, device=device, precision=precision)
    if runner.spec["task"] != "classify":
        raise SeqpipeError(f"{runner.path}: is a '{runner.spec['task']}' model, not a classifier.")
    return runner


def predict(path: str | Path, inputs: list[str], options: PredictOptions = PredictOptions()) -> list[dict[str, Any]]:
    """Run the exported model at ``path`` (a run directory or .onnx file) on ``inputs``."""
    first = open_export(path, device=options.device, precision=options.precision, prefer="step")
    task = first.spec["task"]
    if task not in PREDICTORS:
        raise SeqpipeError(f"{first.path}: task '{task}' has no predictor in this seqpipe version; known: {', '.join(PREDICTORS)}.")
    return PREDICTORS[task](path, first, inputs, options)


def _classify(path, first, inputs, options) -> list[dict[str, Any]]:
    runner = load_classifier(path, options.device, options.precision)
    if not inputs:
        raise SeqpipeError("give one or more texts to classify.")
    results = classify(runner, inputs)
    for r in results:
        r["line"] = f"{r['label']:<10} " + "  ".join(f"{label} {p:.3f}" for label, p in r["probabilities"].items()) + f"  {r['text']}"
    return results


def read_series(path: str | Path, column: str | None) -> np.ndarray:
    """Numbers from a CSV file: the named column when the file has a header holding it, the only
    column otherwise; a headerless file of numbers is read as one value per row."""
    file = Path(path)
    try:
        rows = [row for row in csv.reader(file.read_text(encoding="utf-8").splitlines()) if row]
    except FileNotFoundError:
        raise SeqpipeError(f"{file}: no such series file; give a CSV file of values, oldest first.") from None
    except UnicodeDecodeError:
        raise SeqpipeError(f"{file}: not UTF-8 text; save the series as a UTF-8 CSV file.") from None
    if not rows:
        raise SeqpipeError(f"{file}: is empty; give a CSV file of values, oldest first.")
    header, body, index = rows[0], rows, 0
    if not _is_number(header[0] if len(header) == 1 else header[-1]):
        body = rows[1:]
        if column in header:
            index = header.index(column)
        elif len(header) == 1:
            index = 0
        else:
            raise SeqpipeError(f"{file}: no column '{column}' (found: {', '.join(header)}); name it '{column}' or keep one column.")
    elif len(header) > 1:
        index = len(header) - 1
    try:
        return np.array([float(row[index]) for row in body], dtype=np.float32)
    except (ValueError, IndexError):
        raise SeqpipeError(f"{file}: column {index + 1} holds something that is not a number; fix the series file.") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def forecast(runner: StepRunner, history: np.ndarray, steps: int) -> np.ndarray:
    """The next ``steps`` values after ``history`` (original units): the step graph reads the last
    ``window`` values, then each forecast is fed back in as the next input."""
    encoding = runner.spec["encoding"]
    scaling, window = encoding["input"]["scaling"], int(encoding["input"]["window"])
    context = ((history[-window:] - scaling["mean"]) / scaling["std"]).astype(np.float32)
    _, last, state = runner.run_padded(context[None, :, None], np.array([len(context)]))  # last: [1, 1]
    out = [last]
    for _ in range(steps - 1):
        last, state = runner.step(last, state)
        out.append(last)
    return np.concatenate(out, axis=1)[0] * scaling["std"] + scaling["mean"]


def _forecast(path, first, inputs, options) -> list[dict[str, Any]]:
    runner = first if isinstance(first, StepRunner) else open_export(path, device=options.device, precision=options.precision, prefer="step")
    if not isinstance(runner, StepRunner):
        raise SeqpipeError(f"{runner.path}: forecasting feeds each forecast back through the step graph; pass the run directory or step.onnx.")
    if len(inputs) != 1:
        raise SeqpipeError("give one CSV file holding the series (values oldest first), e.g. seqpipe predict RUN series.csv --steps 5.")
    if options.steps < 1:
        raise SeqpipeError(f"--steps {options.steps}: forecast at least one step ahead.")
    encoding = runner.spec["encoding"]["input"]
    history = read_series(inputs[0], encoding.get("column"))
    window = int(encoding["window"])
    if len(history) < 1:
        raise SeqpipeError(f"{inputs[0]}: holds no values; the model reads up to {window} past values.")
    values = forecast(runner, history, options.steps)
    return [{"input": inputs[0], "history_used": int(min(len(history), window)), "forecast": [float(v) for v in values],
             "line": f"next {options.steps}: " + ", ".join(f"{v:.4g}" for v in values)}]


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


def tag(runner: StepRunner | SequenceRunner, sentences: list[str]) -> list[dict[str, Any]]:
    """Each sentence's words (split as the training corpus was) with their tags and probabilities."""
    vocabulary = WordVocabulary.from_spec(runner.spec["encoding"]["input"])
    labels = runner.spec["encoding"]["output"]["labels"]
    words = [split_words(s) for s in sentences]
    for number, ws in enumerate(words, start=1):
        if not ws:
            raise SeqpipeError(f"input {number} holds no words; give a sentence to tag.")
    lengths = np.array([len(ws) for ws in words], dtype=np.int64)
    tokens = np.zeros((len(words), int(lengths.max())), dtype=np.int64)
    for row, ws in enumerate(words):
        tokens[row, : len(ws)] = vocabulary.encode(ws)
    probs = runner.run(tokens, lengths)[0] if isinstance(runner, SequenceRunner) else runner.run_padded(tokens, lengths)[0]
    results = []
    for row, (sentence, ws) in enumerate(zip(sentences, words)):
        best = probs[row, : len(ws)].argmax(axis=-1)
        results.append({"text": sentence, "tokens": ws, "tags": [labels[int(i)] for i in best],
                        "confidence": [float(probs[row, t, i]) for t, i in enumerate(best)]})
    return results


def _tag(path, first, inputs, options) -> list[dict[str, Any]]:
    if not inputs:
        raise SeqpipeError("give one or more sentences to tag.")
    runner = open_export(path, device=options.device, precision=options.precision)  # the sequence graph when there is one
    results = tag(runner, inputs)
    for r in results:
        r["line"] = " ".join(f"{w}/{t}" for w, t in zip(r["tokens"], r["tags"]))
    return results


PREDICTORS = {"classify": _classify, "forecast": _forecast, "tag": _tag}
