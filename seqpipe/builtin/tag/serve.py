"""Serving a tagger from its ONNX files alone (no torch): the predictor ``seqpipe predict`` uses for
``tag`` models, and :func:`tag` for programs that call it directly. A serving plugin (group
``seqpipe.serving``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqpipe import hookimpl
from seqpipe.errors import SeqpipeError
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.predict import encode_inputs, encoding_from_spec, input_field, shown_input
from seqpipe.serving.runtime import SequenceRunner, StepRunner, open_export


def tag(runner: StepRunner | SequenceRunner, sentences: list[str], pretokenized: bool = False) -> list[dict[str, Any]]:
    """Each input's steps with their tags and probabilities. Text is split by the model's tokenizer,
    or, ``pretokenized``, at whitespace only, so that tokens match training data tokenized otherwise
    (``@user``, ``#tag``, ``'s``); a number-vector model reads JSON lists of per-step vectors."""
    encoding = encoding_from_spec(runner.spec["encoding"]["input"], str(runner.path))
    labels = runner.spec["encoding"]["output"]["labels"]
    if encoding.reads == "numbers":
        words = None
        tokens, lengths, cuts = encode_inputs(encoding, sentences, "step to tag")
    else:
        words = [s.split() if pretokenized else encoding.units(s) for s in sentences]
        tokens, lengths, cuts = encode_inputs(encoding, words, "token to tag")
    probs = (
        runner.run(tokens, lengths)[0] if isinstance(runner, SequenceRunner) else runner.run_padded(tokens, lengths)[0]
    )
    results = []
    for row, sentence in enumerate(sentences):
        best = probs[row, : int(lengths[row])].argmax(axis=-1)
        steps = words[row][: len(best)] if words is not None else [f"step {t + 1}" for t in range(len(best))]
        results.append(
            {
                input_field(encoding): shown_input(encoding, sentence),
                "tokens": steps,
                "tags": [labels[int(i)] for i in best],
                "confidence": [float(probs[row, t, i]) for t, i in enumerate(best)],
                **({"truncated_to": cuts[row]} if cuts[row] is not None else {}),
            }
        )
    return results


class TagPredictor(Predictor):
    options = (
        Option(
            "tokens",
            bool,
            False,
            "each input is tokens separated by spaces, as in the training file "
            "(default: split words with the model's tokenizer)",
        ),
    )
    usage = '"The jury praised the city ."'

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        if not inputs:
            raise SeqpipeError("give one or more sentences to tag.")
        runner = open_export(
            path, device=options.device, precision=options.precision
        )  # the sequence graph when there is one
        results = tag(runner, inputs, pretokenized=options.task["tokens"])
        for r in results:
            r["line"] = " ".join(f"{w}/{t}" for w, t in zip(r["tokens"], r["tags"]))
        return results


@hookimpl
def register_predictors(register):
    register("tag", TagPredictor)
