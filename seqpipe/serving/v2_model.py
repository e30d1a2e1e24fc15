"""seqpipe's models as MLServer models (its custom-runtime contract, ``mlserver.MLModel``), spoken to
in the Open Inference Protocol ("V2", REST and gRPC). Torch-free: everything runs through
:mod:`seqpipe.serving`.

Two roles, chosen per model by ``seqpipe serve`` (``parameters.extra.role``):

``task``
    The task's own predictor (what ``seqpipe predict`` runs): ``text`` (BYTES, one input each) in,
    ``json`` (BYTES, ``seqpipe predict --json``'s record for each input) out, plus every text field the
    records share (``label`` for a classifier). The predictor's options travel as request parameters.
``graph``
    One ONNX graph under its own contract: ``x`` (and ``lengths``, ``state_in.*``) in, ``y`` and
    ``state_out.*`` out, so a client that encodes for itself needs nothing else. ``text`` may stand in
    for ``x`` (encoded as training encoded it) and a probabilities ``y`` is also given as ``label``.
    A step graph serves streams with the state carried by the client: each request sends the
    ``state_in.*`` the previous response returned, or ``"start": true`` (a request parameter) for the
    graph's own initial state, so any number of stateless replicas can serve one stream.

Requests are gathered into batches across clients by :class:`seqpipe.serving.batcher.Batcher`
(ragged lengths padded per batch). A request the model cannot take is refused with a 4xx and one
line; the server goes on serving.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    ResponseOutput,
)

from seqpipe.errors import SeqpipeError
from seqpipe.plugins import SERVING, load_registry
from seqpipe.predictor import PredictOptions, Predictor
from seqpipe.serving.batcher import Batcher, Stopped, pad_together, split_rows
from seqpipe.serving.predict import encode_inputs, encoding_from_spec, predictor_for, spec_of
from seqpipe.serving.runtime import SequenceRunner, StepRunner, open_export, set_session_threads
from seqpipe.signature import state_input, state_output

V2_TYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_}
NUMPY_TO_V2 = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}
# a request may carry this many numbers (x and states together) or text characters, and a batch this
# many values once padded; a request past it is refused with 413 as soon as its declared shapes are
# read (MLServer has parsed the JSON body by then; a proxy in front bounds the body's bytes)
MAX_REQUEST_VALUES = 1 << 22
# the protocol's own request parameters, not options: MLServer's, and those tritonclient adds
# (binary_data_output: MLServer answers in JSON whatever it asks, and tritonclient reads that too)
OWN_PARAMETERS = ("content_type", "headers", "binary_data_output", "binary_data", "binary_data_size")


class BadRequest(MLServerError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class SeqpipeModel(MLModel):
    """One seqpipe model (a task's predictor or one graph) behind MLServer."""

    async def load(self) -> bool:
        parameters = self.settings.parameters
        assert parameters is not None and parameters.uri is not None  # seqpipe serve always writes them
        extra = parameters.extra or {}
        self.role: str = extra.get("role", "graph")
        self.path = Path(parameters.uri)
        self.device: str = extra.get("device", "auto")
        self.max_rows: int = int(extra.get("max_batch_size", 64))
        set_session_threads(extra.get("threads"))  # this process serves: see why there
        if self.role == "task":
            self.spec = spec_of(self.path)
            registry, _ = load_registry(source=SERVING)
            self.predictor: type[Predictor] = predictor_for(self.spec["task"], registry, self.path)
        else:
            self.runner: StepRunner | SequenceRunner = open_export(self.path, device=self.device)
            self.spec = self.runner.spec
        input_spec = (self.spec.get("encoding") or {}).get("input")
        self.encoding = encoding_from_spec(input_spec, str(self.path)) if input_spec else None
        labels = ((self.spec.get("encoding") or {}).get("output") or {}).get("labels")
        self.labels: list[str] | None = labels if isinstance(labels, list) else None
        run = self._run_task if self.role == "task" else self._run_graph
        self.batcher = Batcher(run, self.max_rows, MAX_REQUEST_VALUES)
        self.inputs, self.outputs = self._described()
        if self.role == "task":  # open the run's graphs now, in the thread that serves, not at the first request
            await self.batcher.call(self._warm_up)
        return True

    def _warm_up(self) -> None:
        for graph in sorted((self.path / "onnx").glob("*.onnx")):
            if graph.name.endswith((".int8.onnx", ".fp16.onnx")):  # copies predict opens only when asked
                continue
            try:
                open_export(graph, device=self.device)
            except SeqpipeError:  # a graph a task opens its own way (an encoder, a decoder): opened when first used
                pass

    async def unload(self) -> bool:
        self.batcher.close()
        return True

    async def metadata(self) -> MetadataModelResponse:
        return MetadataModelResponse(
            name=self.name,
            versions=[self.version] if self.version else None,
            platform=f"seqpipe-{self.role}",
            inputs=self.inputs,
            outputs=self.outputs,
            parameters=Parameters(
                **{"seqpipe.spec": json.dumps(self.spec, ensure_ascii=False), "task": self.spec["task"]}
            ),
        )

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            outputs, batch_rows = await self._answer(payload)
        except SeqpipeError as exc:  # said by seqpipe's serving code: the request's fault, in one line
            raise BadRequest(str(exc).splitlines()[0]) from None
        except Stopped as exc:
            raise BadRequest(str(exc), 503) from None
        except Exception as exc:
            if type(exc).__module__.startswith("onnxruntime"):  # the graph refused what it was given
                raise BadRequest(f"the graph refused the input: {str(exc).splitlines()[0][:300]}") from None
            raise
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=outputs,
            # the rows of the batch this request ran in (its own and other clients'): the batcher at work
            parameters=Parameters(batch_rows=batch_rows),
        )

    async def _answer(self, payload: InferenceRequest) -> tuple[list[ResponseOutput], int]:
        tensors = read_inputs(payload.inputs)
        options = {k: v for k, v in (payload.parameters.model_dump() if payload.parameters else {}).items()}
        options = {k: v for k, v in options.items() if k not in OWN_PARAMETERS and v is not None}
        first = tensors.get("text", tensors.get("x"))
        rows = first.shape[0] if first is not None and first.ndim else 0
        if rows > self.max_rows:
            raise BadRequest(
                f"{rows} inputs in one request; model '{self.name}' takes at most {self.max_rows} "
                "(seqpipe serve --max-batch-size): send them in several requests.",
                413,
            )
        if self.role == "task":
            key, item, rows, steps = self._task_request(tensors, options)
        else:
            key, item, rows, steps = self._graph_request(tensors, options)
        return await self.batcher.submit(key, item, rows, steps)

    # -- the task's predictor ------------------------------------------------------------------------

    def _task_request(self, tensors: dict[str, np.ndarray], options: dict[str, Any]) -> tuple[Any, Any, int, int]:
        _only(tensors, {"text"}, self.name, hint=f"for tensors use model '{self.name}-sequence' or '-step'")
        texts = _texts(tensors, "text")
        resolved = self.predictor.resolve_options(self.spec["task"], options)  # refusals: one line, by predict()
        for option in self.predictor.options:
            value = resolved[option.name]
            if value is not None and not _is(value, option.type):
                kind = option.type.__name__
                raise BadRequest(f"parameter '{option.name}': {value!r} is not {kind}; give a {kind}.")
        key = ("task", tuple(sorted(resolved.items())))
        return key, (texts, resolved), len(texts), max(len(t) for t in texts)

    def _run_task(self, key: Any, items: list[Any]) -> list[list[ResponseOutput]]:
        texts = [t for chunk, _ in items for t in chunk]
        options = PredictOptions(self.device, "fp32", items[0][1])
        results = self.predictor().predict(self.path, texts, options)
        for r in results:
            r.pop("line", None)  # for people at a terminal; the records are seqpipe predict --json's
        out, start = [], 0
        for chunk, _ in items:
            mine = results[start : start + len(chunk)]
            start += len(chunk)
            outputs = [_bytes_output("json", [json.dumps(r, ensure_ascii=False) for r in mine])]
            for field in mine[0]:  # every text field of the records, but the one that echoes the input
                values = [r.get(field) for r in mine]
                if all(isinstance(v, str) for v in values) and values != chunk:
                    outputs.append(_bytes_output(field, [str(v) for v in values]))
            out.append(outputs)
        return out

    # -- one graph -----------------------------------------------------------------------------------

    def _graph_request(self, tensors: dict[str, np.ndarray], options: dict[str, Any]) -> tuple[Any, Any, int, int]:
        runner, step = self.runner, isinstance(self.runner, StepRunner)
        states = [state_input(n) for n in runner.state_names]
        allowed = {"x", "text", *states} | (set() if step else {"lengths"})
        _only(tensors, allowed, self.name)
        unknown = set(options) - ({"start"} if step else set())
        if unknown:
            raise BadRequest(
                f"parameter '{sorted(unknown)[0]}': model '{self.name}' takes none"
                + (" but 'start' (true: begin streams from the graph's initial state)." if step else ".")
            )
        if ("x" in tensors) == ("text" in tensors):
            raise BadRequest(f"give 'x' (the encoded input) or 'text' (raw inputs), one of them; model '{self.name}'.")
        if "text" in tensors:
            x, lengths = self._encoded(_texts(tensors, "text"), streaming=step)
            mode = "text"
        else:
            x, lengths = self._checked_x(tensors, step)
            mode = "x"
        rows = x.shape[0]
        state = {n: tensors[state_input(n)] for n in runner.state_names if state_input(n) in tensors}
        for n, value in state.items():
            want = (rows, *runner.state_shapes[n])
            _check_tensor(state_input(n), value, np.float32, want)
        missing = [state_input(n) for n in runner.state_names if n not in state]
        if not isinstance(runner, StepRunner) and state and missing:  # a state is continued whole, or not at all
            raise BadRequest(
                f"missing {', '.join(missing)}: send every state_in.* of the state you continue from, or none of them."
            )
        if isinstance(runner, StepRunner):
            start = options.get("start", False)
            if not isinstance(start, bool):
                raise BadRequest(f"parameter 'start': give true or false (found {start!r}).")
            if start and state:
                raise BadRequest(
                    "parameter 'start' is true and state_in.* were given: begin a stream with one of them."
                )
            if not start:
                if missing:
                    raise BadRequest(
                        f"missing {', '.join(missing)}: send the state_out.* of this stream's previous response, or "
                        'the request parameter "start": true to begin a stream.'
                    )
            else:
                state = runner.initial_state(rows)
        key = (mode, tuple(sorted(state)), x.shape[2:] if mode == "text" or not step else x.shape[1:])
        return key, (x, lengths, state), rows, int(np.prod(x.shape[1:]))

    def _encoded(self, texts: list[str], streaming: bool) -> tuple[np.ndarray, np.ndarray]:
        if self.encoding is None:
            raise BadRequest(f"model '{self.name}' has no input encoding in its metadata; send 'x'.")
        x, lengths, cuts = encode_inputs(self.encoding, texts, "step")  # its refusals: one line, by predict()
        cut = next((i for i, c in enumerate(cuts) if c is not None), None)
        if cut is not None:  # never cut silently: the whole-input model ('task' role) cuts and says so
            what = "chunk" if streaming else "input"
            raise BadRequest(
                f"text {cut + 1}: longer than the model's max_length ({self.encoding.max_length} steps); send a "
                f"shorter {what}" + (" (a stream may go on over several requests)." if streaming else ".")
            )
        return x, lengths

    def _checked_x(self, tensors: dict[str, np.ndarray], step: bool) -> tuple[np.ndarray, np.ndarray]:
        runner = self.runner
        declared = runner.spec["inputs"][0]["shape"]  # [batch, (time,) features…]
        x = tensors["x"]
        tail = [d for d in declared[1:] if d != "time"]
        want = ["n", *([] if step else ["T"]), *tail]
        _check_tensor("x", x, runner.x_dtype, tuple(want))
        if x.shape[0] == 0 or (not step and x.shape[1] == 0):
            raise BadRequest("input 'x' is empty; give at least one sequence of at least one step.")
        if x.dtype == np.int64 and x.size:  # an id past the vocabulary fails inside the graph, a negative one
            # would silently read another id's embedding; ids only (x without per-step features) have one vocabulary
            top = self.encoding.size if self.encoding is not None and x.ndim == (1 if step else 2) else None
            if x.min() < 0 or (top is not None and x.max() >= top):
                bound = f"0 to {top - 1}" if top is not None else "0 or more"
                raise BadRequest(f"input 'x': ids must be {bound} (found {int(x.min())} to {int(x.max())}).")
        if step:
            return x, np.ones(x.shape[0], dtype=np.int64)
        if "lengths" in tensors:
            lengths = tensors["lengths"]
            _check_tensor("lengths", lengths, np.int64, (x.shape[0],))
            if lengths.min() < 1 or lengths.max() > x.shape[1]:
                raise BadRequest(f"input 'lengths': each must be from 1 to x's time axis ({x.shape[1]}).")
        else:
            lengths = np.full(x.shape[0], x.shape[1], dtype=np.int64)
        return x, lengths

    def _run_graph(self, key: Any, items: list[Any]) -> list[list[ResponseOutput]]:
        mode = key[0]
        runner = self.runner
        rows = [x.shape[0] for x, _, _ in items]
        lengths = np.concatenate([lengths for _, lengths, _ in items])
        state = {n: np.concatenate([s[n] for _, _, s in items]) for n in key[1]} or None
        steps: list[int] | None = None
        if isinstance(runner, StepRunner):
            if mode == "text":  # each chunk stepped through; y after each chunk's last unit
                x, _ = pad_together([x for x, _, _ in items])
                _, y, state = runner.run_padded(x, lengths, state)
            else:
                y, state = runner.step(np.concatenate([x for x, _, _ in items]), state or {})
        else:
            x, steps = pad_together([x for x, _, _ in items])
            y, state = runner.run(x, lengths, state)
            if "time" not in runner.spec["outputs"][0]["shape"]:
                steps = None
        assert state is not None  # every seqpipe graph returns its final state
        ys = split_rows(y, rows, steps)
        states = {n: split_rows(v, rows) for n, v in state.items()}
        out = []
        for i in range(len(items)):
            outputs = [_tensor_output("y", ys[i])]
            outputs += [_tensor_output(state_output(n), states[n][i]) for n in runner.state_names]
            if self.labels is not None and ys[i].ndim == 2 and ys[i].shape[1] == len(self.labels):
                outputs.append(_bytes_output("label", [self.labels[int(k)] for k in np.argmax(ys[i], axis=1)]))
            out.append(outputs)
        return out

    def _described(self) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
        text = MetadataTensor(name="text", datatype="BYTES", shape=[-1])
        if self.role == "task":
            outputs = [MetadataTensor(name="json", datatype="BYTES", shape=[-1])]
            if self.spec["task"] == "classify":  # its records' one text field besides the input; other tasks' vary
                outputs.append(MetadataTensor(name="label", datatype="BYTES", shape=[-1]))
            return [text], outputs

        def tensor(entry: dict[str, Any]) -> MetadataTensor:
            dims = [d if isinstance(d, int) else -1 for d in entry["shape"]]
            return MetadataTensor(name=entry["name"], datatype=NUMPY_TO_V2[np.dtype(entry["dtype"])], shape=dims)

        inputs = [tensor(e) for e in self.spec["inputs"]] + ([text] if self.encoding is not None else [])
        outputs = [tensor(e) for e in self.spec["outputs"]]
        if self.labels is not None and "time" not in self.spec["outputs"][0]["shape"]:
            outputs.append(MetadataTensor(name="label", datatype="BYTES", shape=[-1]))
        return inputs, outputs


def read_inputs(inputs: list[RequestInput]) -> dict[str, np.ndarray]:
    """The request's tensors by name, each its declared shape; one line for anything malformed."""
    tensors: dict[str, np.ndarray] = {}
    total = 0
    for entry in inputs:
        name, shape, kind = entry.name, list(entry.shape), str(getattr(entry.datatype, "value", entry.datatype))
        if name in tensors:
            raise BadRequest(f"input '{name}' is given twice.")
        if any(d < 0 for d in shape):
            raise BadRequest(f"input '{name}': shape {shape} has a negative dimension.")
        count = math.prod(shape)
        total += count
        if total > MAX_REQUEST_VALUES:
            raise BadRequest(
                f"request too large: more than {MAX_REQUEST_VALUES} values; send fewer or shorter inputs per request.",
                413,
            )
        data = getattr(entry.data, "root", entry.data)
        if kind == "BYTES":
            flat = list(_flatten(data))
            try:
                values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in flat]
            except UnicodeDecodeError:
                raise BadRequest(f"input '{name}': BYTES that are not UTF-8 text.") from None
            if not all(isinstance(v, str) for v in values):
                raise BadRequest(f"input '{name}': BYTES data must be strings.")
            total += sum(len(v) for v in values)
            if total > MAX_REQUEST_VALUES:
                raise BadRequest(
                    f"request too large: more than {MAX_REQUEST_VALUES} characters; send fewer texts.", 413
                )
            array = np.empty(len(values), dtype=object)
            array[:] = values
        elif kind in V2_TYPES:
            array = _numbers(name, kind, list(_flatten(data)))
        else:
            raise BadRequest(f"input '{name}': datatype {kind} is not one seqpipe's graphs read (INT64, FP32, BYTES).")
        if array.size != count:
            raise BadRequest(f"input '{name}': shape {shape} holds {count} values, and {array.size} were sent.")
        tensors[name] = array.reshape(shape)
    if not tensors:
        raise BadRequest("the request has no inputs.")
    return tensors


def _numbers(name: str, kind: str, values: list[Any]) -> np.ndarray:
    """``values`` as ``kind``, refused rather than coerced: 1.7 or "3" for an integer, text or an
    overflow to infinity for a float, anything but true/false for BOOL."""
    try:
        raw = np.asarray(values) if values else np.asarray([], dtype=V2_TYPES[kind])
    except (TypeError, ValueError, OverflowError):
        raw = np.asarray([], dtype=object)
    allowed = {"BOOL": "b", "INT64": "iu", "INT32": "iu", "FP32": "iuf", "FP64": "iuf"}[kind]
    if raw.dtype.kind not in allowed and (values or raw.dtype == object):
        raise BadRequest(f"input '{name}': {kind} data must be {_what(kind)} (found {_found(values)}).")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array: np.ndarray = raw.astype(V2_TYPES[kind], casting="unsafe" if raw.dtype.kind in "iu" else "same_kind")
    except (TypeError, ValueError, OverflowError, FloatingPointError):
        raise BadRequest(f"input '{name}': {kind} data out of range or not {_what(kind)}.") from None
    if raw.dtype.kind in "iu" and kind.startswith("INT") and not np.array_equal(array, raw):
        raise BadRequest(f"input '{name}': {kind} data out of range.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"input '{name}': {kind} data must be finite numbers (found inf or nan, or too large).")
    return array


def _what(kind: str) -> str:
    return {"BOOL": "true or false"}.get(kind, "whole numbers" if kind.startswith("INT") else "numbers")


def _found(values: list[Any]) -> str:
    wrong = next((v for v in values if isinstance(v, (str, bool, float)) or v is None), values[0] if values else None)
    return f"{type(wrong).__name__} {wrong!r}"[:80]


def _flatten(data: Any):
    if isinstance(data, (list, tuple)):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _only(tensors: dict[str, np.ndarray], allowed: set[str], model: str, hint: str = "") -> None:
    unknown = sorted(set(tensors) - allowed)
    if unknown:
        raise BadRequest(
            f"model '{model}' has no input '{unknown[0]}'; it reads: {', '.join(sorted(allowed))}"
            + (f" ({hint})." if hint else ".")
        )


def _texts(tensors: dict[str, np.ndarray], name: str) -> list[str]:
    value = tensors[name]
    if value.dtype != object:
        raise BadRequest(f"input '{name}': datatype BYTES (UTF-8 text), one element per input.")
    if value.ndim != 1 or value.shape[0] == 0:
        raise BadRequest(f"input '{name}': shape [n] with n >= 1 (one text each), not {list(value.shape)}.")
    return [str(v) for v in value]


def _check_tensor(name: str, value: np.ndarray, dtype: Any, shape: tuple[Any, ...]) -> None:
    """``value`` must have ``dtype`` and ``shape`` (ints fixed, names free)."""
    if value.dtype != np.dtype(dtype):
        have = "BYTES" if value.dtype == object else NUMPY_TO_V2.get(value.dtype, str(value.dtype))
        raise BadRequest(f"input '{name}': datatype {have}, and the model reads {NUMPY_TO_V2[np.dtype(dtype)]}.")
    fits = len(value.shape) == len(shape) and all(not isinstance(w, int) or w == d for d, w in zip(value.shape, shape))
    if not fits:
        shown = ", ".join(str(w) for w in shape)
        raise BadRequest(f"input '{name}': shape {list(value.shape)}, and the model reads [{shown}].")


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _tensor_output(name: str, value: np.ndarray) -> ResponseOutput:
    value = np.ascontiguousarray(value)
    return ResponseOutput(
        name=name, shape=list(value.shape), datatype=NUMPY_TO_V2[value.dtype], data=value.reshape(-1).tolist()
    )


def _bytes_output(name: str, values: list[str]) -> ResponseOutput:
    return ResponseOutput(name=name, shape=[len(values)], datatype="BYTES", data=values)
