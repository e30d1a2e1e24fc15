"""The built-in tasks' predictors: how ``seqpipe predict`` serves classify, tag, forecast, generate
and seq2seq from their ONNX files. A serving plugin (group ``seqpipe.serving``): no torch here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqpipe import hookimpl
from seqpipe.errors import SeqpipeError
from seqpipe.serving.predict import Generator, Transcriber, classify, forecast, load_classifier, read_history, tag, top_k
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.runtime import StepRunner, open_export
from seqpipe.timegrid import following, shown_like

BEAM = Option("beam", int, 1, "beam width (> 1: beam search)")
MAX_LENGTH = Option("max_length", int, None, "most symbols to emit (default: from the model)")


SHOWN_LABELS = 5  # labels a result's line shows without --top-k (the JSON has every probability)


class ClassifyPredictor(Predictor):
    options = (Option("top_k", int, None, "give only the K most probable labels, most probable first (default: every "
                      f"label in the JSON, the {SHOWN_LABELS} most probable on each line)"),)
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
            r["line"] = f"{r['label']:<10} " + "  ".join(f"{label} {p:.3f}" for label, p in shown.items()) \
                + (f"  (+{more} more)" if more else "") + f"  {given}" \
                + (f"  (read its first {r['truncated_to']} steps)" if "truncated_to" in r else "")
        return results


class TagPredictor(Predictor):
    options = (Option("tokens", bool, False, "each input is tokens separated by spaces, as in the training file "
                      "(default: split words with the model's tokenizer)"),)
    usage = '"The jury praised the city ."'

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        if not inputs:
            raise SeqpipeError("give one or more sentences to tag.")
        runner = open_export(path, device=options.device, precision=options.precision)  # the sequence graph when there is one
        results = tag(runner, inputs, pretokenized=options.task["tokens"])
        for r in results:
            r["line"] = " ".join(f"{w}/{t}" for w, t in zip(r["tokens"], r["tags"]))
        return results


class ForecastPredictor(Predictor):
    takes_inputs = False  # one series file, one forecast
    options = (Option("steps", int, 5, "values to forecast ahead"),)
    usage = "series.csv --steps 5   (a CSV of past rows with the model's columns: oldest first, or with its time column)"

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        steps = options.task["steps"]
        runner = open_export(path, device=options.device, precision=options.precision, prefer="step")
        if not isinstance(runner, StepRunner):
            raise SeqpipeError(f"{runner.path}: forecasting feeds each forecast back through the step graph; pass the run directory or step.onnx.")
        if len(inputs) != 1:
            raise SeqpipeError("give one CSV file holding the series (values oldest first), e.g. seqpipe predict RUN series.csv --steps 5.")
        if steps < 1:
            raise SeqpipeError(f"--steps {steps}: forecast at least one step ahead.")
        encoding = runner.spec["encoding"]["input"]
        columns, targets = encoding["columns"], encoding["targets"]
        history = read_history(inputs[0], columns, encoding.get("time_column"), encoding.get("time_gaps", "refuse"))
        window = int(encoding["window"])
        if len(history.values) < 1:
            raise SeqpipeError(f"{inputs[0]}: holds no values; the model reads up to {window} past rows.")
        values = forecast(runner, history.values, steps)  # [steps, columns]
        result: dict[str, Any] = {"input": inputs[0], "history_used": int(min(len(history.values), window))}
        ahead = following(history.times, steps) if history.times else None
        if ahead is not None:  # the run had a time column: each forecast's time, written as the file writes its times
            result["times"] = [shown_like(history.last_time or "", t) for t in ahead]
        said = [f"{t} " for t in result["times"]] if "times" in result else [""] * steps
        if len(columns) == 1:
            result["forecast"] = [float(v) for v in values[:, 0]]
            result["line"] = f"next {steps}: " + ", ".join(f"{when}{v:.4g}" for when, v in zip(said, values[:, 0]))
        else:
            result["forecast"] = {c: [float(v) for v in values[:, i]] for i, c in enumerate(columns)}
            result["line"] = "; ".join(f"{c} next {steps}: " + ", ".join(f"{when}{v:.4g}" for when, v in
                                                                          zip(said, values[:, columns.index(c)])) for c in targets)
        return [result]


class GeneratePredictor(Predictor):
    takes_inputs = False  # no inputs: samples from a condition
    options = (
        Option("condition", str, None, "the condition that starts each sample: a label, or comma-separated numbers "
               "for a vector (default: the first label)"),
        Option("count", int, 5, "samples to draw"),
        Option("temperature", float, 0.0, "0 decodes greedily, > 0 samples"),
        BEAM,
        Option("seed", int, 0, "seed for sampling"),
        MAX_LENGTH,
    )
    usage = "--condition female --count 5 --temperature 0.8   (or --beam 5)"

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        o = options.task
        if inputs:
            raise SeqpipeError(f"a generation model takes no inputs (found {inputs[0]!r}); choose with --condition, --count, --temperature, --beam.")
        generator = Generator(path, device=options.device)
        if o["condition"] is None and generator.condition["kind"] == "vector":
            raise SeqpipeError(f"give --condition: {generator.condition['size']} comma-separated number(s) "
                               f"({', '.join(generator.condition['columns'])}).")
        condition = o["condition"] or generator.conditions[0]
        if o["count"] < 1 or o["beam"] < 1 or o["temperature"] < 0:
            raise SeqpipeError("--count and --beam must be at least 1 and --temperature at least 0.")
        results = generator.generate(condition, o["count"], o["temperature"], o["beam"], o["seed"], o["max_length"])
        for r in results:
            r["line"] = f"{r['text']:<16} {condition}  log p = {r['log_probability']:.2f}" + ("" if r["finished"] else "  (length limit)")
        return results


class Seq2SeqPredictor(Predictor):
    options = (BEAM, MAX_LENGTH)
    usage = '"source one" "source two"   (--beam 5 for beam search)'

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        o = options.task
        if not inputs:
            raise SeqpipeError("give one or more sources to transcribe, e.g. seqpipe predict RUN \"source one\" \"source two\" "
                               "(the run's log shows two from its test split).")
        if o["beam"] < 1:
            raise SeqpipeError("--beam must be at least 1.")
        results = Transcriber(path, device=options.device).transcribe(inputs, o["beam"], o["max_length"])
        for r in results:
            r.pop("attention", None)
            r["line"] = f"{r['source']:<16} {r['text']}"
        return results


@hookimpl
def register_predictors(register):
    register("classify", ClassifyPredictor)
    register("tag", TagPredictor)
    register("forecast", ForecastPredictor)
    register("generate", GeneratePredictor)
    register("seq2seq", Seq2SeqPredictor)
