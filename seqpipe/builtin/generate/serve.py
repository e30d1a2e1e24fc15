"""Generating from ONNX files alone (no torch): the predictor ``seqpipe predict`` uses for
``generate`` models, and :class:`Generator` for programs that call it directly (the task's run report
decodes its samples through it too). A serving plugin (group ``seqpipe.serving``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqpipe import hookimpl
from seqpipe.errors import SeqpipeError, did_you_mean
from seqpipe.predictor import Option, PredictOptions, Predictor
from seqpipe.serving.decoding import BEAM, MAX_LENGTH, beam_search, sample
from seqpipe.serving.runtime import STEP_FILE, OnnxGraph, StepRunner, run_file


class Generator:
    """Generation from ONNX alone: ``init.onnx`` turns the condition into the first state, ``step.onnx``
    writes one character per call, :mod:`seqpipe.serving.decoding` chooses them."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.step_runner = StepRunner(run_file(path, STEP_FILE), device=device)
        self.init = OnnxGraph(run_file(path, "init.onnx"), device=device)
        encoding = self.step_runner.spec["encoding"]
        self.symbols = encoding["input"]["symbols"]
        self.condition = encoding["condition"]
        self.conditions = self.condition.get("labels", [])
        self.sos, self.eos = int(encoding["input"]["sos_id"]), int(encoding["input"]["eos_id"])
        self.max_length = int(encoding["decoding"]["max_length"])

    def start(self, condition: str, rows: int) -> dict[str, np.ndarray]:
        """The first state of ``rows`` sequences: ``condition`` is a label, or comma-separated numbers for a vector."""
        if self.condition["kind"] == "vector":
            size, scaling = int(self.condition["size"]), self.condition["scaling"]
            try:
                values = np.array([float(v) for v in str(condition).split(",")], dtype=np.float64)
            except ValueError:
                values = np.zeros(0)
            if len(values) != size:
                raise SeqpipeError(
                    f"--condition {condition!r}: this model is conditioned on {size} number(s) "
                    f"({', '.join(self.condition['columns'])}); give them comma-separated."
                )
            scaled = ((values - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])).astype(np.float32)
            feed = np.repeat(scaled[None], rows, axis=0)
        else:
            if condition not in self.conditions:
                raise SeqpipeError(
                    f"--condition {condition!r}: this model knows "
                    f"{', '.join(self.conditions)}{did_you_mean(condition, self.conditions)}."
                )
            feed = np.full(rows, self.conditions.index(condition), dtype=np.int64)
        states = self.init.session.run(None, {"condition": feed})
        return dict(zip(self.step_runner.state_names, states))

    def generate(
        self,
        condition: str,
        count: int = 1,
        temperature: float = 0.0,
        beam: int = 1,
        seed: int = 0,
        max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        limit = max_length or self.max_length
        if beam > 1:
            found = beam_search(
                self.step_runner.step, self.start(condition, 1), sos=self.sos, eos=self.eos, max_length=limit, beam=beam
            )[:count]
            how = f"beam {beam}"
        else:
            rows = count if temperature > 0 else 1  # greedy decoding has one answer
            found = sample(
                self.step_runner.step,
                self.start(condition, rows),
                sos=self.sos,
                eos=self.eos,
                max_length=limit,
                temperature=temperature,
                rng=np.random.default_rng(seed),
            )
            how = f"sampled at temperature {temperature:g}" if temperature > 0 else "greedy"
        return [
            {
                "condition": condition,
                "text": "".join(self.symbols[t] for t in h.tokens),
                "log_probability": h.log_probability,
                "finished": h.finished,
                "decoding": how,
            }
            for h in found
        ]


class GeneratePredictor(Predictor):
    takes_inputs = False  # no inputs: samples from a condition
    options = (
        Option(
            "condition",
            str,
            None,
            "the condition that starts each sample: a label, or comma-separated numbers "
            "for a vector (default: the first label)",
        ),
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
            raise SeqpipeError(
                f"a generation model takes no inputs (found {inputs[0]!r}); choose with --condition, --count, "
                "--temperature, --beam."
            )
        generator = Generator(path, device=options.device)
        if o["condition"] is None and generator.condition["kind"] == "vector":
            raise SeqpipeError(
                f"give --condition: {generator.condition['size']} comma-separated number(s) "
                f"({', '.join(generator.condition['columns'])})."
            )
        condition = o["condition"] or generator.conditions[0]
        if o["count"] < 1 or o["beam"] < 1 or o["temperature"] < 0:
            raise SeqpipeError("--count and --beam must be at least 1 and --temperature at least 0.")
        results = generator.generate(condition, o["count"], o["temperature"], o["beam"], o["seed"], o["max_length"])
        for r in results:
            r["line"] = f"{r['text']:<16} {condition}  log p = {r['log_probability']:.2f}" + (
                "" if r["finished"] else "  (length limit)"
            )
        return results


@hookimpl
def register_predictors(register):
    register("generate", GeneratePredictor)
