"""Encoder–decoder transcription from ONNX files alone (no torch): the predictor ``seqpipe predict``
uses for ``seq2seq`` models, and :class:`Transcriber` for programs that call it directly (the task's
run report transcribes its examples through it too). A serving plugin (group ``seqpipe.serving``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqpipe import hookimpl
from seqpipe.errors import SeqpipeError
from seqpipe.predictor import PredictOptions, Predictor
from seqpipe.serving.decoding import BEAM, MAX_LENGTH, beam_search, sample
from seqpipe.serving.predict import encode_inputs, encoding_from_spec
from seqpipe.serving.runtime import OnnxGraph, run_file
from seqpipe.signature import state_input


class Transcriber:
    """Encoder–decoder from ONNX alone: ``encoder.onnx`` reads the source, ``decoder.onnx`` writes the
    target one token per call (attending to the encoder's memory when it has attention)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.encoder = OnnxGraph(run_file(path, "encoder.onnx"), device=device)
        self.decoder = OnnxGraph(run_file(path, "decoder.onnx"), device=device)
        spec = self.decoder.spec["encoding"]
        self.source = encoding_from_spec(spec["input"], str(self.decoder.path))
        self.target = encoding_from_spec(spec["output"]["encoding"], str(self.decoder.path))
        self.symbols = spec["output"]["labels"]
        self.sos, self.eos = int(spec["output"]["sos_id"]), int(spec["output"]["eos_id"])
        self.max_length = int(spec["decoding"]["max_length"])
        self.state_names = [s["name"] for s in self.decoder.spec["states"]]
        self.attends = spec["attention"] != "none"

    def _step(self, memory: np.ndarray, memory_lengths: np.ndarray, record: list | None = None):
        """A decoding step function over the decoder graph; memory rows follow the live hypotheses."""
        tiled: dict[int, tuple[np.ndarray, np.ndarray]] = {len(memory): (memory, memory_lengths)}

        def step(tokens: np.ndarray, state: dict[str, np.ndarray]):
            feeds = {"x": tokens.astype(np.int64), **{state_input(n): state[n] for n in self.state_names}}
            if self.attends:
                rows = len(tokens)
                if (
                    rows not in tiled
                ):  # beam search: one source's memory for every live hypothesis, tiled once per width
                    tiled[rows] = (np.repeat(memory[:1], rows, axis=0), np.repeat(memory_lengths[:1], rows))
                feeds["memory"], feeds["memory_lengths"] = tiled[rows]
            out = self.decoder.session.run(None, feeds)
            if record is not None and self.attends:
                record.append(out[1])
            return out[0], dict(zip(self.state_names, out[-len(self.state_names) :]))

        return step

    def transcribe(self, sources: list[str], beam: int = 1, max_length: int | None = None) -> list[dict[str, Any]]:
        x, lengths, _ = encode_inputs(self.source, sources, "source token to transcribe")
        memory, *states = self.encoder.session.run(None, {"x": x, "lengths": lengths})
        state = dict(zip(self.state_names, states))
        limit = max_length or self.max_length
        results = []
        if beam > 1:
            for row, source in enumerate(sources):
                best = beam_search(
                    self._step(memory[row : row + 1], lengths[row : row + 1]),
                    {n: v[row : row + 1] for n, v in state.items()},
                    sos=self.sos,
                    eos=self.eos,
                    max_length=limit,
                    beam=beam,
                )[0]
                results.append(self._result(source, best, None))
            return results
        record: list[np.ndarray] = []
        found = sample(self._step(memory, lengths, record), state, sos=self.sos, eos=self.eos, max_length=limit)
        attention = np.stack(record, axis=1) if record else None  # [B, steps, source]
        for row, (source, h) in enumerate(zip(sources, found)):
            results.append(
                self._result(
                    source, h, None if attention is None else attention[row, : len(h.tokens) + 1, : lengths[row]]
                )
            )
        return results

    def _result(self, source: str, h, attention) -> dict[str, Any]:
        tokens = [self.symbols[t] for t in h.tokens]
        result = {
            "source": source,
            "text": self.target.join(tokens),
            "tokens": tokens,
            "log_probability": h.log_probability,
            "finished": h.finished,
        }
        if attention is not None:
            result["attention"] = attention.tolist()
        return result


class Seq2SeqPredictor(Predictor):
    options = (BEAM, MAX_LENGTH)
    usage = '"source one" "source two"   (--beam 5 for beam search)'

    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        o = options.task
        if not inputs:
            raise SeqpipeError(
                'give one or more sources to transcribe, e.g. seqpipe predict RUN "source one" "source two" '
                "(the run's log shows two from its test split)."
            )
        if o["beam"] < 1:
            raise SeqpipeError("--beam must be at least 1.")
        results = Transcriber(path, device=options.device).transcribe(inputs, o["beam"], o["max_length"])
        for r in results:
            r.pop("attention", None)
            r["line"] = f"{r['source']:<16} {r['text']}"
        return results


@hookimpl
def register_predictors(register):
    register("seq2seq", Seq2SeqPredictor)
