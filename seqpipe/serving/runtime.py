"""Serving exported graphs with onnxruntime. Never imports torch.

An application that embeds a seqpipe model needs only this module (numpy, onnx, onnxruntime)
and the .onnx file: the file's ``seqpipe.spec`` metadata says how to encode inputs, start the
state, step, and read the output.

Providers: CUDA when onnxruntime can use it, CPU otherwise; a fallback is said once per process
on stderr, never silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from seqpipe.errors import SeqpipeError
from seqpipe.serving.metadata import load_beside, read_spec
from seqpipe.signature import state_input, state_output

STEP_FILE = "step.onnx"
SEQUENCE_FILE = "sequence.onnx"
_fallback_said = False
# while `sessions_kept()` is active: graphs already opened, by (class, file, device, threads)
_kept_graphs: ContextVar[dict | None] = ContextVar("seqpipe_kept_graphs", default=None)


@contextlib.contextmanager
def sessions_kept():
    """Within this block, opening the same graph again (same file, device and threads) reuses the
    session already made instead of loading, checking and compiling the file again: what lets a
    predictor be called chunk after chunk (``seqpipe predict --file``) at the cost of one load."""
    token = _kept_graphs.set({})
    try:
        yield
    finally:
        _kept_graphs.reset(token)


# what every session this process opens gets unless its caller says otherwise: a server sets it once
# (see set_session_threads); a command or an application keeps onnxruntime's own default
_session_threads: int | None = None


def set_session_threads(threads: int | None) -> None:
    """onnxruntime threads for every session opened from now on in this process (None: one per core).
    A server of small recurrent models sets 1: waking a pool of threads costs more than it saves on
    one short sequence, and the server's other work needs the cores; more cores serve more requests
    through more processes instead."""
    global _session_threads
    _session_threads = threads


def keep_sessions_here() -> None:
    """From now on in this thread, as inside :func:`sessions_kept` (for a server's worker thread,
    which keeps its graphs open for as long as it lives)."""
    if _kept_graphs.get() is None:
        _kept_graphs.set({})


_cuda_preloaded = False


def _preload_cuda_libraries() -> None:
    """Make CUDA and cuDNN findable the way onnxruntime documents: ``onnxruntime.preload_dlls()``
    loads them from the nvidia-* pip packages (or torch's copies) before a CUDA session starts.
    Its per-library complaints are dropped: if CUDA still cannot start, we say so once ourselves."""
    global _cuda_preloaded
    if _cuda_preloaded or not hasattr(ort, "preload_dlls"):
        return
    _cuda_preloaded = True
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:  # best effort: a missing library only means the CPU fallback
            pass


def choose_providers(device: str = "auto") -> list[str]:
    """Execution providers for ``device`` in {"auto", "cuda", "cpu"}."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and (device == "cuda" or gpu_device_seen()):
        _preload_cuda_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise SeqpipeError(
            f"device 'cuda' requested but this onnxruntime offers only {', '.join(available)}; install onnxruntime-gpu "
            "and CUDA, or use --device cpu."
        )
    return ["CPUExecutionProvider"]


def gpu_device_seen(root: Path = Path("/")) -> bool:
    """False only where this machine certainly has no NVIDIA GPU: Linux with neither the NVIDIA
    driver loaded (/proc/driver/nvidia, /sys/module/nvidia) nor its device files (/dev/nvidia*,
    Jetson's /dev/nvhost-* and /dev/nvgpu, WSL's /dev/dxg). "auto" then means the CPU, without
    starting CUDA (onnxruntime-gpu installed on a CPU machine) or saying that it could not."""
    if not sys.platform.startswith("linux"):
        return True
    dev = root / "dev"
    return (
        any(
            path.exists()
            for path in (
                root / "proc/driver/nvidia",
                root / "sys/module/nvidia",
                dev / "nvidiactl",
                dev / "nvgpu",
                dev / "dxg",
            )
        )
        or any(dev.glob("nvidia[0-9]*"))
        or any(dev.glob("nvhost-*"))
    )


# seqpipe's graphs are fp32, and parity promises answers within about 1e-5 of torch's; onnxruntime's
# CUDA provider would otherwise round MatMul/Gemm inputs to TF32 (a 10-bit mantissa, about 1e-3
# relative) on Ampere and later GPUs. cuDNN's RNN kernels, behind the native LSTM/GRU/RNN operators,
# take no such option and may still use TF32: NVIDIA_TF32_OVERRIDE=0 in the environment stops that too.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}


def session_providers(providers: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` as handed to ``onnxruntime.InferenceSession``: each with the options seqpipe
    runs it with (CUDA in full fp32)."""
    return [(p, dict(CUDA_PROVIDER_OPTIONS)) if p == "CUDAExecutionProvider" else p for p in providers]


@contextlib.contextmanager
def _quiet_cuda_start(providers: list[str]):
    """onnxruntime logs two error lines when it cannot start CUDA; seqpipe says it once, in one line."""
    if providers[0] == "CUDAExecutionProvider":
        ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def cuda_usable() -> bool:
    """Whether onnxruntime can start its CUDA provider here (a GPU, and CUDA and cuDNN libraries it
    can load), asked the way seqpipe opens its sessions."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    providers = choose_providers("cuda")
    identity = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["a"], ["b"])],
            "identity",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    with _quiet_cuda_start(providers):
        try:
            session = ort.InferenceSession(identity.SerializeToString(), providers=session_providers(providers[:1]))
        except Exception:  # a provider that cannot start, however onnxruntime reports it, is not usable
            return False
    return session.get_providers()[0] == "CUDAExecutionProvider"


def _say_fallback(reason: str) -> None:
    global _fallback_said
    if not _fallback_said:
        print(f"seqpipe: {reason}; running on CPU.", file=sys.stderr)
        _fallback_said = True


class OnnxGraph:
    """One exported graph: its checked ONNX file, its ``seqpipe.spec`` and an inference session.

    Sessions are safe to call from several threads at once (onnxruntime's ``run`` is thread-safe).
    Subclasses name the graph ``kind`` they serve.
    """

    kind: str | None = None

    def __init__(self, path: str | Path, *, device: str = "auto", threads: int | None = None) -> None:
        kept = _kept_graphs.get()
        key = (type(self), Path(path).resolve(), device, threads)
        if kept is not None and key in kept:
            self.__dict__.update(kept[key].__dict__)
            return
        self._open(Path(path), device, threads)
        if kept is not None:
            kept[key] = self

    def _open(self, path: Path, device: str, threads: int | None) -> None:
        self.path = path
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:
            raise SeqpipeError(
                f"{self.path}: not a valid ONNX model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})."
            ) from None
        load_beside(proto, self.path)  # external data only from the model's own folder, never the current one
        try:
            onnx.checker.check_model(proto)  # refuse malformed files before handing them to a runtime
        except Exception as exc:
            raise SeqpipeError(
                f"{self.path}: not a valid ONNX model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})."
            ) from None
        self.spec: dict[str, Any] = read_spec(proto, self.path)
        if self.kind is not None and self.spec.get("graph") != self.kind:
            raise SeqpipeError(f"{self.path}: is a '{self.spec.get('graph')}' graph, not a {self.kind} graph.")
        if (
            self.spec.get("precision") == "int8"
        ):  # dynamically quantized for CPU kernels: on CUDA its ops would bounce between devices
            if device == "cuda":
                raise SeqpipeError(
                    f"{self.path}: int8 copies are quantized for CPU serving; use precision fp16 on CUDA, or device "
                    "cpu."
                )
            device = "cpu"
        self.state_names = [s["name"] for s in self.spec.get("states", [])]
        # each state's shape after the batch axis, (slots, size): a projected LSTM's h is narrower than its c
        self.state_shapes: dict[str, tuple[int, ...]] = {
            s["name"]: tuple(s["shape"][1:]) for s in self.spec.get("states", [])
        }
        self.x_dtype = np.dtype(self.spec["inputs"][0]["dtype"])
        options = ort.SessionOptions()
        # warnings off: onnxruntime warns about every initializer that doubles as an input, which is
        # exactly how sequence graphs make state_in.* optional; errors are still reported
        options.log_severity_level = 3
        threads = threads or _session_threads
        if threads:
            options.intra_op_num_threads = threads
        providers = choose_providers(device)
        with _quiet_cuda_start(providers):
            self.session = ort.InferenceSession(
                proto.SerializeToString(), sess_options=options, providers=session_providers(providers)
            )
        if providers[0] == "CUDAExecutionProvider" and "CUDAExecutionProvider" not in self.session.get_providers():
            if device == "cuda":
                raise SeqpipeError(
                    f"{self.path}: onnxruntime could not start its CUDA provider (check the CUDA and cuDNN libraries); "
                    "use --device cpu."
                )
            _say_fallback("onnxruntime has a CUDA provider but could not start it (no GPU or CUDA libraries found)")
        self.providers = self.session.get_providers()


class StepRunner(OnnxGraph):
    """A step graph: ``step(x, state) -> (y, state)``, and a masked loop over padded batches."""

    kind = "step"

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        """The state a new sequence starts from, per the file's initial-state rule."""
        rule = self.spec["initial_state"]
        if rule["rule"] == "learnable":
            return {
                n: np.broadcast_to(
                    np.asarray(rule["values"][n], dtype=np.float32), (batch, *self.state_shapes[n])
                ).copy()
                for n in self.state_names
            }
        if rule["rule"] in ("zeros", "random"):  # "random" noise is training-only; serving starts from its mean
            return {n: np.zeros((batch, *self.state_shapes[n]), dtype=np.float32) for n in self.state_names}
        if rule["rule"] == "conditioned":
            raise SeqpipeError(
                f"{self.path}: sequences start from a state computed from a condition; run {rule['graph']} "
                "on the condition and pass its state_out.* as the state."
            )
        raise SeqpipeError(
            f"{self.path}: initial-state rule '{rule['rule']}' is not supported by this seqpipe version; upgrade "
            "seqpipe."
        )

    def step(self, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds = {"x": np.ascontiguousarray(x, dtype=self.x_dtype)}
        feeds.update({state_input(n): state[n] for n in self.state_names})
        y, *new = self.session.run(None, feeds)
        return y, dict(zip(self.state_names, new))

    def run_padded(
        self, x: np.ndarray, lengths: np.ndarray, state: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step a padded batch ``x`` [B, T, …] with ``lengths`` [B].

        Returns ``y`` at every step [B, T, …] (zeros past each length), ``y`` after each
        sequence's last step [B, …], and the final state; finished sequences keep their state.
        """
        batch, steps = x.shape[0], x.shape[1]
        lengths = np.asarray(lengths)
        state = self.initial_state(batch) if state is None else state
        ys = None
        for t in range(steps):
            y, new = self.step(x[:, t], state)
            alive = t < lengths  # [B]
            if ys is None:
                ys = np.zeros((batch, steps, *y.shape[1:]), dtype=y.dtype)
            ys[alive, t] = y[alive]
            state = {n: np.where(alive.reshape(-1, 1, 1), new[n], state[n]) for n in self.state_names}
        assert ys is not None  # every sequence has a first step
        last = ys[np.arange(batch), lengths - 1]
        return ys, last, state

    def final(self, x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``y`` after each sequence's last step, and the final state (same call as SequenceRunner's)."""
        _, last, state = self.run_padded(x[:, : int(np.max(lengths))], lengths)
        return last, state


class SequenceRunner(OnnxGraph):
    """A sequence graph: ``run(x [B, T, …], lengths [B]) -> (y, final state)`` in one call."""

    kind = "sequence"

    def run(
        self, x: np.ndarray, lengths: np.ndarray, state: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``y`` and each sequence's final state; start from ``state`` ([B, slots, size] per name)
        to continue sequences, or from the file's initial state when it is None."""
        feeds = {"x": np.ascontiguousarray(x, dtype=self.x_dtype), "lengths": np.asarray(lengths, dtype=np.int64)}
        if state is not None:
            feeds.update({state_input(n): np.ascontiguousarray(state[n], dtype=np.float32) for n in self.state_names})
        y, *states = self.session.run(None, feeds)
        return y, dict(zip(self.state_names, states))

    def final(self, x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``y`` for each sequence and its final state (same call as StepRunner's)."""
        return self.run(x[:, : int(np.max(lengths))], lengths)


def run_file(path: str | Path, name: str) -> Path:
    """``name`` inside a run directory (or its onnx/ folder), or beside a given .onnx file."""
    base = Path(path)
    folders = [base.parent] if base.is_file() else [base / "onnx", base]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise SeqpipeError(f"{path}: no {name} here or in onnx/; pass the run directory of a model that exports {name}.")


def open_export(
    path: str | Path,
    *,
    device: str = "auto",
    prefer: str = "sequence",
    precision: str = "fp32",
    threads: int | None = None,
) -> StepRunner | SequenceRunner:
    """Open an export: an .onnx file (its kind read from its metadata) or a run directory (its
    ``prefer``-red graph when it has one, the other otherwise; ``precision`` "int8" or "fp16" picks
    the ``*.int8.onnx`` or ``*.fp16.onnx`` copies). int8 copies always run on CPU, what they are made for."""
    path = Path(path)
    if path.is_file():
        kept = _kept_graphs.get() or {}
        opened = next(
            (cls for cls, file, dev, thr in kept if file == path.resolve() and (dev, thr) == (device, threads)), None
        )
        if opened is not None:  # opened before in this sessions_kept() block: its kind is known
            return opened(path, device=device, threads=threads)
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            kind = json.loads(meta["seqpipe.spec"])["graph"]
        except Exception:
            kind = "step"  # let the runner's own checks give the precise error
        return (SequenceRunner if kind == "sequence" else StepRunner)(path, device=device, threads=threads)
    order = [SEQUENCE_FILE, STEP_FILE] if prefer == "sequence" else [STEP_FILE, SEQUENCE_FILE]
    if precision != "fp32":
        order = [name.replace(".onnx", f".{precision}.onnx") for name in order]
    for filename in order:
        for candidate in (path / "onnx" / filename, path / filename):
            if candidate.is_file():
                return (SequenceRunner if filename.startswith("sequence") else StepRunner)(
                    candidate, device=device, threads=threads
                )
    if path.is_dir():
        hint = f" (export them with [export] {precision} = true)" if precision != "fp32" else ""
        raise SeqpipeError(
            f"{path}: no {' or '.join(order)} in this directory or its onnx/ folder{hint}; pass a run directory or an "
            ".onnx file."
        )
    raise SeqpipeError(f"{path}: no such file or directory; pass a run directory or an .onnx file.")


class Stream:
    """Step a batch of sequences one time step per call, keeping the state on the session's device.

    The state lives in two preallocated buffers bound with onnxruntime's IO binding: each step
    reads one and writes the other (ping-pong), so no state crosses to the host between steps —
    on a GPU the state never leaves device memory. Only ``y`` comes back, because the caller
    wants it. Each stream owns its buffers; several streams (threads) can share one runner.
    """

    def __init__(self, runner: StepRunner, batch: int) -> None:
        if not isinstance(runner, StepRunner):
            raise SeqpipeError(
                f"{runner.path}: a {runner.spec.get('graph')} graph cannot be streamed step by step"
                + (
                    f"; topology '{runner.spec.get('topology')}' reads each sequence in both directions, so it has no "
                    "step graph"
                    if runner.spec.get("causal") is False
                    else ""
                )
                + "; run whole sequences with SequenceRunner.run, or stream a step.onnx."
            )
        self.runner, self.batch = runner, batch
        cuda = runner.providers[0] == "CUDAExecutionProvider"
        self.device = "cuda" if cuda else "cpu"
        self._buffers = [
            {
                n: ort.OrtValue.ortvalue_from_shape_and_type(
                    (batch, *runner.state_shapes[n]), np.float32, self.device, 0
                )
                for n in runner.state_names
            }
            for _ in range(2)
        ]
        x_tail = runner.spec["inputs"][0]["shape"][1:]  # [] for token ids, [features] for numeric inputs
        # the input comes from the host anyway: one buffer, bound once, refilled each step
        self._x = (
            ort.OrtValue.ortvalue_from_shape_and_type((batch, *x_tail), runner.x_dtype, "cpu", 0)
            if all(isinstance(d, int) for d in x_tail)
            else None
        )
        self._y = ort.OrtValue.ortvalue_from_shape_and_type(
            (batch, *runner.spec["outputs"][0]["shape"][1:]), np.float32, self.device, 0
        )
        self._bindings = [self._bind(i) for i in range(2)]
        self._current = 0
        if runner.spec["initial_state"]["rule"] != "conditioned":  # conditioned streams start with reset(state=…)
            self.reset()

    def _bind(self, read: int) -> ort.IOBinding:
        binding = self.runner.session.io_binding()
        write = 1 - read
        for n in self.runner.state_names:
            binding.bind_ortvalue_input(state_input(n), self._buffers[read][n])
            binding.bind_ortvalue_output(state_output(n), self._buffers[write][n])
        binding.bind_ortvalue_output("y", self._y)
        if self._x is not None:
            binding.bind_ortvalue_input("x", self._x)
        return binding

    def reset(self, rows: np.ndarray | list[int] | None = None, state: dict[str, np.ndarray] | None = None) -> None:
        """Start sequences afresh: all rows, or only ``rows`` (e.g. those that just ended), from the
        file's initial state or from ``state`` ([batch, slots, size] per name, e.g. an init graph's output)."""
        initial = self.runner.initial_state(self.batch) if state is None else state
        for n, buffer in self._buffers[self._current].items():
            if rows is None:
                buffer.update_inplace(initial[n])
            else:
                current = buffer.numpy()  # a host copy only when sequences end, never per step
                current[np.asarray(rows)] = initial[n][np.asarray(rows)]
                buffer.update_inplace(np.ascontiguousarray(current))

    def step(self, x: np.ndarray) -> np.ndarray:
        """Advance every sequence one step with inputs ``x`` [batch, …]; return ``y`` [batch, …]."""
        binding = self._bindings[self._current]
        x = np.ascontiguousarray(x, dtype=self.runner.x_dtype)
        if self._x is not None:
            self._x.update_inplace(x)
        else:
            binding.bind_cpu_input("x", x)
        self.runner.session.run_with_iobinding(binding)
        self._current = 1 - self._current
        return self._y.numpy()

    def state(self) -> dict[str, np.ndarray]:
        """A host copy of the current state (for inspection; stepping never needs it)."""
        return {n: v.numpy() for n, v in self._buffers[self._current].items()}
