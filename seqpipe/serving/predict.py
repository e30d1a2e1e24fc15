"""Predictions from exported ONNX files alone: no torch, no checkpoint, no pipeline file.

``predict(path, inputs, **options)`` reads the task from the file's ``seqpipe.spec`` and hands the
inputs to the predictor registered for that task (:mod:`seqpipe.predictor`; plugins in the
``seqpipe.serving`` entry-point group); each returns one JSON-able dict per result, with a ``line``
for people. The built-in tasks' serving calls (classify, tag, forecast, :class:`Generator`,
:class:`Transcriber`) live here too, for their predictors and for programs that call them directly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from seqpipe.encoding import pad_ids
from seqpipe.serving.decoding import beam_search, sample
from seqpipe.errors import PluginError, SeqpipeError, did_you_mean
from seqpipe.data import FLOAT32_MAX, Record, time_value
from seqpipe.inputs import InputEncoding
from seqpipe.timegrid import time_grid
from seqpipe.plugins import SERVING, SERVING_ENTRY_POINT_GROUP, load_registry
from seqpipe.registry import Registry
from seqpipe.predictor import PredictOptions, Predictor
from seqpipe.serving.metadata import read_spec
from seqpipe.serving.runtime import STEP_FILE, OnnxGraph, SequenceRunner, StepRunner, open_export


_serving_registry = None


def encoding_from_spec(spec: dict[str, Any], where: str = "the export's metadata") -> InputEncoding:
    """The fitted encoding an export's metadata describes (``encoding.input``), from the encoding
    plugins of the torch-free serving group: what ``seqpipe predict`` and applications use."""
    global _serving_registry
    if _serving_registry is None:
        _serving_registry, _ = load_registry(source=SERVING)
    entry = _serving_registry.get("encoding", str(spec.get("kind")), f"{where}: encoding kind")
    return entry.obj.from_spec(spec)


def load_classifier(path: str | Path, device: str = "auto", precision: str = "fp32") -> StepRunner | SequenceRunner:
    """A run directory's sequence graph (one call per batch) or, failing that, its step graph."""
    runner = open_export(path, device=device, precision=precision)
    if runner.spec["task"] != "classify":
        raise SeqpipeError(f"{runner.path}: is a '{runner.spec['task']}' model, not a classifier.")
    return runner


def predict(path: str | Path, inputs: list[str], *, device: str = "auto", precision: str = "fp32", registry: Registry | None = None,
            **task_options: Any) -> list[dict[str, Any]]:
    """Run the exported model at ``path`` (a run directory or .onnx file) on ``inputs`` with its
    task's predictor; ``task_options`` are that predictor's options by name (e.g. ``steps=10`` for
    forecast, ``condition="female"`` for generate). ``registry``: a serving registry (default: a
    fresh one of the installed serving plugins)."""
    task = task_of(path)
    predictor = predictor_for(task, registry if registry is not None else load_registry(source=SERVING)[0], path)
    options = PredictOptions(device, precision, predictor.resolve_options(task, task_options))
    return predictor().predict(Path(path), list(inputs), options)


def predictor_for(task: str, registry: Registry, where: str | Path) -> type[Predictor]:
    """The predictor class registered for ``task``; ``where`` (the model path) starts the error."""
    if task not in registry.entries["predictor"] and ("predictor", task) not in registry.clashes:
        known = ", ".join(registry.names("predictor")) or "none"
        raise PluginError(f"{where}: task '{task}' has no registered predictor (tasks with one: {known}); install the "
                          f"distribution that provides '{task}' with its serving plugin (an entry point in the "
                          f"'{SERVING_ENTRY_POINT_GROUP}' group whose register_predictors hook registers '{task}').")
    return registry.get("predictor", task, str(where)).obj


def spec_of(path: str | Path) -> dict[str, Any]:
    """The checked ``seqpipe.spec`` of ``path``, or of the first seqpipe file in a run directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "onnx").glob("*.onnx")) + sorted(path.glob("*.onnx"))
        if not files:
            raise SeqpipeError(f"{path}: no .onnx files in this directory or its onnx/ folder; pass a run directory or an .onnx file.")
        path = files[0]
    elif not path.exists():
        raise SeqpipeError(f"{path}: no such file or directory; pass a run directory or an .onnx file.")
    try:  # the metadata alone: no session is started to read what the file says it is
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SeqpipeError(f"{path}: not a valid ONNX model ({type(exc).__name__}).") from None
    return read_spec(proto, path)


def task_of(path: str | Path) -> str:
    """The task named in the ``seqpipe.spec`` of ``path`` (see :func:`spec_of`)."""
    return spec_of(path)["task"]


def input_column_of(spec: dict[str, Any]) -> str | None:
    """The column the input encoding of a model's ``spec`` read in training (``encoding.input.column``), if it says."""
    column = (spec.get("encoding") or {}).get("input", {}).get("column")
    return column if isinstance(column, str) else None


@dataclass(frozen=True)
class History:
    """A series file as the forecaster reads it: values [rows, columns] in time order, and (when the
    file has the model's time column) each row's time and how the last one was written."""

    values: np.ndarray
    times: list[Any] | None = None
    last_time: str | None = None


def read_history(path: str | Path, columns: list[str], time_column: str | None = None, time_gaps: str = "refuse") -> History:
    """Rows of numbers from a CSV file, [rows, len(columns)]: the named columns when the file has a
    header (rows ordered by ``time_column`` when the file has it, as in training, and times that skip
    steps refused unless training accepted them: ``time_gaps``); a one-column
    model also reads the only (or the last) column of a file without them, or a headerless file of
    numbers. Every value must be a finite number."""
    file = Path(path)
    try:
        rows = [row for row in csv.reader(file.read_text(encoding="utf-8").splitlines()) if row]
    except FileNotFoundError:
        raise SeqpipeError(f"{file}: no such series file; give a CSV file of values, oldest first.") from None
    except UnicodeDecodeError:
        raise SeqpipeError(f"{file}: not UTF-8 text; save the series as a UTF-8 CSV file.") from None
    if not rows:
        raise SeqpipeError(f"{file}: is empty; give a CSV file of values, oldest first.")
    header, body = rows[0], rows
    if not _is_number(header[0] if len(header) == 1 else header[-1]):
        body = rows[1:]
        missing = [c for c in columns if c not in header]
        if not missing:
            indices = [header.index(c) for c in columns]
        elif len(columns) == 1 and len(header) == 1:
            indices = [0]
        else:
            raise SeqpipeError(f"{file}: no column {', '.join(map(repr, missing))} (found: {', '.join(header)}); the model "
                               f"reads {', '.join(columns)} at every step.")
    elif len(columns) == 1:
        indices = [len(header) - 1]
    else:
        raise SeqpipeError(f"{file}: has no header; the model reads {', '.join(columns)}: give a CSV with those columns.")
    values, times, lines, written = [], [], [], []
    for number, row in enumerate(body, start=len(rows) - len(body) + 1):
        try:
            values.append([float(row[i]) for i in indices])
        except (ValueError, IndexError):
            raise SeqpipeError(f"{file}:{number}: holds something that is not a number in {', '.join(columns)}; fix the series file.") from None
        if not all(abs(v) <= FLOAT32_MAX for v in values[-1]):
            raise SeqpipeError(f"{file}:{number}: a missing or infinite value (nan, inf) in {', '.join(columns)}; the model needs "
                               "every past value: fill it in.")
        if time_column is not None and body is not rows and time_column in header:
            record = Record(zip(header, row))
            record.line = number
            times.append(time_value(record, time_column, file))
            lines.append(number)
            written.append(record[time_column])
    if times:  # as training did: rows in time order, whatever the file's
        order = sorted(range(len(values)), key=times.__getitem__)
        values = [values[i] for i in order]
        grid = time_grid([times[i] for i in order])
        if grid.gaps and time_gaps != "accept":
            gap = grid.gaps[0]
            raise SeqpipeError(f"{file}:{lines[order[gap.after + 1]]}: {grid.missing} missing step(s) in column '{time_column}' "
                               f"(the series steps by {grid.step}), the first after line {lines[order[gap.after]]}; the model "
                               "reads rows as equally spaced steps: add rows for the missing times.")
        return History(np.array(values, dtype=np.float32).reshape(len(values), len(columns)), [times[i] for i in order],
                       written[order[-1]])
    return History(np.array(values, dtype=np.float32).reshape(len(values), len(columns)))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def forecast(runner: StepRunner, history: np.ndarray, steps: int) -> np.ndarray:
    """The next ``steps`` rows after ``history`` [rows, columns] (original units) [steps, columns]:
    the step graph reads the last ``window`` rows, then each forecast is fed back in as the next input."""
    encoding = runner.spec["encoding"]
    scaling, window = encoding["input"]["scaling"], int(encoding["input"]["window"])
    mean, std = np.asarray(scaling["mean"], np.float64), np.asarray(scaling["std"], np.float64)
    context = ((history[-window:] - mean) / std).astype(np.float32)
    _, last, state = runner.run_padded(context[None], np.array([len(context)]))  # last: [1, F]
    out = [last]
    for _ in range(steps - 1):
        last, state = runner.step(last, state)
        out.append(last)
    return np.concatenate(out, axis=0) * std + mean


def encode_inputs(encoding: Any, inputs: list[Any], what: str) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """Command-line inputs encoded as training encoded them: (x padded, lengths, per input the
    length it was cut to, or None). Number vectors are given as JSON text, e.g. '[[0.1, 2], [0.3, 1]]'."""
    from seqpipe.inputs import number_vectors

    values = [number_vectors(text, f"input {i}", None) for i, text in enumerate(inputs, start=1)] \
        if encoding.reads == "numbers" else inputs  # texts, or token lists already split
    for i, value in enumerate(values, start=1):
        if encoding.reads == "numbers" and value.shape[1] != encoding.size:
            raise SeqpipeError(f"input {i}: {value.shape[1]} numbers per step, and the model reads {encoding.size} "
                               f"({', '.join(encoding.options.columns or []) or 'its features'}); give {encoding.size} per step.")
    cut = encoding.max_length
    cuts = [cut if cut is not None and encoding.steps(v) > cut else None for v in values]
    encoded = [encoding.encode(v) for v in values]
    if encoding.dtype == "int64":
        x, lengths = pad_ids(encoded, what)
        return x, lengths, cuts
    lengths = np.array([len(v) for v in encoded], dtype=np.int64)
    x = np.zeros((len(encoded), int(lengths.max()), encoding.size), dtype=np.float32)
    for row, v in enumerate(encoded):
        x[row, : len(v)] = v
    return x, lengths, cuts


def input_field(encoding: Any) -> str:
    """The name a result gives its input: ``series`` for number vectors, ``text`` for text."""
    return "series" if encoding.reads == "numbers" else "text"


def shown_input(encoding: Any, value: str) -> Any:
    """The input as a result shows it: number vectors as the lists they are, text as given."""
    import json

    return json.loads(value) if encoding.reads == "numbers" and isinstance(value, str) else value


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
        results.append({field: shown_input(encoding, text), "label": labels[int(np.argmax(probs))],
                        "probabilities": {label: float(p) for label, p in zip(labels, probs)},
                        **({"truncated_to": cut} if cut is not None else {})})
    return results


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
    probs = runner.run(tokens, lengths)[0] if isinstance(runner, SequenceRunner) else runner.run_padded(tokens, lengths)[0]
    results = []
    for row, sentence in enumerate(sentences):
        best = probs[row, : int(lengths[row])].argmax(axis=-1)
        steps = words[row][: len(best)] if words is not None else [f"step {t + 1}" for t in range(len(best))]
        results.append({input_field(encoding): shown_input(encoding, sentence), "tokens": steps, "tags": [labels[int(i)] for i in best],
                        "confidence": [float(probs[row, t, i]) for t, i in enumerate(best)],
                        **({"truncated_to": cuts[row]} if cuts[row] is not None else {})})
    return results


def _run_file(path: str | Path, name: str) -> Path:
    """``name`` inside a run directory (or its onnx/ folder), or beside a given .onnx file."""
    base = Path(path)
    folders = [base.parent] if base.is_file() else [base / "onnx", base]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise SeqpipeError(f"{path}: no {name} here or in onnx/; pass the run directory of a generation model.")


class Generator:
    """Generation from ONNX alone: ``init.onnx`` turns the condition into the first state, ``step.onnx``
    writes one character per call, :mod:`seqpipe.serving.decoding` chooses them."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.step_runner = StepRunner(_run_file(path, STEP_FILE), device=device)
        self.init = OnnxGraph(_run_file(path, "init.onnx"), device=device)
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
                raise SeqpipeError(f"--condition {condition!r}: this model is conditioned on {size} number(s) "
                                   f"({', '.join(self.condition['columns'])}); give them comma-separated.")
            scaled = ((values - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])).astype(np.float32)
            feed = np.repeat(scaled[None], rows, axis=0)
        else:
            if condition not in self.conditions:
                raise SeqpipeError(f"--condition {condition!r}: this model knows {', '.join(self.conditions)}{did_you_mean(condition, self.conditions)}.")
            feed = np.full(rows, self.conditions.index(condition), dtype=np.int64)
        states = self.init.session.run(None, {"condition": feed})
        return dict(zip(self.step_runner.state_names, states))

    def generate(self, condition: str, count: int = 1, temperature: float = 0.0, beam: int = 1, seed: int = 0,
                 max_length: int | None = None) -> list[dict[str, Any]]:
        limit = max_length or self.max_length
        if beam > 1:
            found = beam_search(self.step_runner.step, self.start(condition, 1), sos=self.sos, eos=self.eos, max_length=limit, beam=beam)[:count]
            how = f"beam {beam}"
        else:
            rows = count if temperature > 0 else 1  # greedy decoding has one answer
            found = sample(self.step_runner.step, self.start(condition, rows), sos=self.sos, eos=self.eos, max_length=limit,
                           temperature=temperature, rng=np.random.default_rng(seed))
            how = f"sampled at temperature {temperature:g}" if temperature > 0 else "greedy"
        return [{"condition": condition, "text": "".join(self.symbols[t] for t in h.tokens), "log_probability": h.log_probability,
                 "finished": h.finished, "decoding": how} for h in found]


class Transcriber:
    """Encoder–decoder from ONNX alone: ``encoder.onnx`` reads the source, ``decoder.onnx`` writes the
    target one token per call (attending to the encoder's memory when it has attention)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.encoder = OnnxGraph(_run_file(path, "encoder.onnx"), device=device)
        self.decoder = OnnxGraph(_run_file(path, "decoder.onnx"), device=device)
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
            feeds = {"x": tokens.astype(np.int64), **{f"state_in.{n}": state[n] for n in self.state_names}}
            if self.attends:
                rows = len(tokens)
                if rows not in tiled:  # beam search: one source's memory for every live hypothesis, tiled once per width
                    tiled[rows] = (np.repeat(memory[:1], rows, axis=0), np.repeat(memory_lengths[:1], rows))
                feeds["memory"], feeds["memory_lengths"] = tiled[rows]
            out = self.decoder.session.run(None, feeds)
            if record is not None and self.attends:
                record.append(out[1])
            return out[0], dict(zip(self.state_names, out[-len(self.state_names):]))
        return step

    def transcribe(self, sources: list[str], beam: int = 1, max_length: int | None = None) -> list[dict[str, Any]]:
        x, lengths, _ = encode_inputs(self.source, sources, "source token to transcribe")
        memory, *states = self.encoder.session.run(None, {"x": x, "lengths": lengths})
        state = dict(zip(self.state_names, states))
        limit = max_length or self.max_length
        results = []
        if beam > 1:
            for row, source in enumerate(sources):
                best = beam_search(self._step(memory[row:row + 1], lengths[row:row + 1]), {n: v[row:row + 1] for n, v in state.items()},
                                   sos=self.sos, eos=self.eos, max_length=limit, beam=beam)[0]
                results.append(self._result(source, best, None))
            return results
        record: list[np.ndarray] = []
        found = sample(self._step(memory, lengths, record), state, sos=self.sos, eos=self.eos, max_length=limit)
        attention = np.stack(record, axis=1) if record else None  # [B, steps, source]
        for row, (source, h) in enumerate(zip(sources, found)):
            results.append(self._result(source, h, None if attention is None else attention[row, : len(h.tokens) + 1, : lengths[row]]))
        return results

    def _result(self, source: str, h, attention) -> dict[str, Any]:
        tokens = [self.symbols[t] for t in h.tokens]
        result = {"source": source, "text": self.target.join(tokens), "tokens": tokens, "log_probability": h.log_probability, "finished": h.finished}
        if attention is not None:
            result["attention"] = attention.tolist()
        return result
