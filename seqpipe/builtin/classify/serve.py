"""Serving a classifier from its ONNX files alone (no torch): the predictor ``seqpipe predict`` uses
for ``classify`` models, and :func:`classify` for programs that call it directly. A serving plugin
(group ``seqpipe.serving``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from seqpipe import hookimpl
from seqpipe.errors import SeqpipeError
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.predict import encode_inputs, encoding_from_spec, input_field, shown_input
from seqpipe.serving.runtime import SequenceRunner, StepRunner, open_export

SHOWN_LABELS = 5  # labels a result's line shows without --top-k (the JSON has every probability)


def load_classifier(path: str | Path, device: str = "auto", precision: str = "fp32") -> StepRunner | SequenceRunner:
    """A run directory's sequence graph (one call per batch) or, failing that, its step graph."""
    runner = open_export(path, device=device, precision=precision)
    if runner.spec["task"] != "classify":
        raise SeqpipeError(f"{runner.path}: is a '{runner.spec['task']}' model, not a classifier.")
    return runner


def top_k(probabilities: dict[str, float], k: int | None) -> dict[str, float]:
    """The ``k`` most probable labels, most probable first (all of them when ``k`` is None)."""
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    return dict(ranked if k is None else ranked[:k])


def classify(runner: StepRunner | SequenceRunner, texts: list[str]) -> list[dict[str, Any]]:
    """Label and class probabilities for each input (a step graph is stepped to each input's end);
    an input longer than the model's max_length is read up to it, and its result says so."""
    encoding = encoding_from_spec(runner.spec["encoding"]["input"], str(runner.path))
    labels = runner.spec["encoding"]["output"]["labels"]
    tokens, lengths, cuts = encode_inputs(encoding, texts, "step to classify")
    last, _ = runner.final(tokens, lengths)
    field = input_field(encoding)
    results = []
    for text, probs, cut in zip(texts, last, cuts):
        results.append(
            {
                field: shown_input(encoding, text),
                "label": labels[int(np.argmax(probs))],
                "probabilities": {label: float(p) for label, p in zip(labels, probs)},
                **({"truncated_to": cut} if cut is not None else {}),
            }
        )
    return results


class ClassifyPredictor(Predictor):
    options = (
        Option(
            "top_k",
            int,
            None,
            "give only the K most probable labels, most probable first (default: every "
            f"label in the JSON, the {SHOWN_LABELS} most probable on each line)",
        ),
    )
    usage = '"text one" "text two"   (number-vector models: \'[[0.1, 2.0], [0.3, 1.5]]\', one vector per step)'

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        if not inputs:
            raise SeqpipeError("give one or more texts to classify.")
        k = options.task["top_k"]
        if k is not None and k < 1:
            raise SeqpipeError(f"--top-k {k}: give at least 1 (the most probable label).")
        results = classify(load_classifier(path, options.device, options.precision), inputs)
        for r in results:
            r["probabilities"] = top_k(r["probabilities"], k) if k is not None else r["probabilities"]
            shown = top_k(r["probabilities"], k or SHOWN_LABELS)
            more = len(r["probabilities"]) - len(shown) if k is None else 0
            given = r["text"] if "text" in r else json.dumps(r["series"])
            r["line"] = (
                f"{r['label']:<10} "
                + "  ".join(f"{label} {p:.3f}" for label, p in shown.items())
                + (f"  (+{more} more)" if more else "")
                + f"  {given}"
                + (f"  (read its first {r['truncated_to']} steps)" if "truncated_to" in r else "")
            )
        return results


@hookimpl
def register_predictors(register):
    register("classify", ClassifyPredictor)
