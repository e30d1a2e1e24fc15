"""seqpipe.serving.runtime: provider choice, checked files, CUDA when present (skipped cleanly otherwise)."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

from seqpipe.errors import SeqpipeError
from seqpipe.serving import runtime

# asked once, at collection: each ask starts (or fails to start) a CUDA session
CUDA_MARKS = (
    pytest.mark.cuda,
    pytest.mark.skipif(
        not runtime.cuda_usable(), reason="onnxruntime cannot start its CUDA provider here (no GPU or CUDA libraries)"
    ),
)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]  # CUDA results are compared with CPU's
# CUDA differs from CPU by rounding alone when it computes in fp32 (NVIDIA_TF32_OVERRIDE=0); otherwise
# cuDNN's RNN kernels may use TF32 (a 10-bit mantissa), which no onnxruntime session option turns off
CUDA_TOLERANCE = 1e-4 if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0" else 1e-2


def needs_cuda(test):
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


def test_cpu_is_always_possible():
    assert runtime.choose_providers("cpu") == ["CPUExecutionProvider"]


def test_auto_prefers_cuda_when_offered_and_a_gpu_is_there(monkeypatch, capsys):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "_preload_cuda_libraries", lambda: None)
    monkeypatch.setattr(runtime, "gpu_device_seen", lambda: True)
    assert runtime.choose_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # onnxruntime-gpu on a machine without a GPU: the CPU, quietly; asking for cuda still tries it
    monkeypatch.setattr(runtime, "gpu_device_seen", lambda: False)
    assert runtime.choose_providers("auto") == ["CPUExecutionProvider"]
    assert runtime.choose_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime.choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(SeqpipeError, match="device 'cuda' requested"):
        runtime.choose_providers("cuda")


def test_cuda_sessions_ask_for_full_fp32(monkeypatch, lstm_export, capsys):
    """onnxruntime's CUDA provider rounds MatMul/Gemm to TF32 unless told not to, which alone would
    break parity; every session seqpipe opens on CUDA must say use_tf32 = 0 (checked here without a
    GPU by recording what reaches onnxruntime, and the fallback is said when CUDA cannot start)."""
    asked = []
    real_session = ort.InferenceSession

    def recording_session(model, sess_options=None, providers=None):
        asked.append(providers)
        return real_session(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    monkeypatch.setattr(runtime, "_preload_cuda_libraries", lambda: None)
    monkeypatch.setattr(runtime, "gpu_device_seen", lambda: True)  # a GPU whose CUDA libraries are missing
    monkeypatch.setattr(runtime, "_fallback_said", False)
    runner = runtime.StepRunner(lstm_export)
    assert asked == [[("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]]
    assert runner.providers == ["CPUExecutionProvider"] and "running on CPU" in capsys.readouterr().err
    with pytest.raises(SeqpipeError, match="could not start its CUDA provider"):
        runtime.StepRunner(lstm_export, device="cuda")


def test_garbage_file_is_refused_before_onnxruntime(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(SeqpipeError, match="not a valid ONNX model"):
        runtime.StepRunner(bad)


def test_onnx_without_seqpipe_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(SeqpipeError, match="no seqpipe.spec metadata"):
        runtime.StepRunner(path)


def test_fallback_is_said_once(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_fallback_said", False)
    runtime._say_fallback("no GPU")
    runtime._say_fallback("no GPU")
    assert capsys.readouterr().err.count("running on CPU") == 1


@needs_cuda
def test_cuda_step_matches_cpu(tmp_path, small_csv, write_pipeline):
    from click.testing import CliRunner

    from seqpipe.cli import main

    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, cell="lstm")
    assert CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "r")]).exit_code == 0
    cpu = runtime.StepRunner(tmp_path / "r" / "onnx" / "step.onnx", device="cpu")
    gpu = runtime.StepRunner(tmp_path / "r" / "onnx" / "step.onnx", device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).integers(1, 20, size=(8, 30))
    lengths = np.arange(23, 31)
    _, a, sa = cpu.run_padded(x, lengths)
    _, b, sb = gpu.run_padded(x, lengths)
    assert np.abs(a - b).max() <= CUDA_TOLERANCE and all(np.abs(sa[k] - sb[k]).max() <= CUDA_TOLERANCE for k in sa)


@needs_cuda
def test_cuda_stream_keeps_state_on_the_device_and_fp16_copies_are_checked_there(tmp_path, small_csv, write_pipeline):
    import json

    from click.testing import CliRunner

    from seqpipe.cli import main

    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, cell="gru", extra="fp16 = true")
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "r" / "parity.json").read_text())
    for kind in ("step.fp16", "sequence.fp16"):  # fp16 is a GPU serving option: checked on the GPU
        assert parity["graphs"][kind]["passed"]
        assert parity["graphs"][kind]["runtime"]["onnxruntime_providers"][0] == "CUDAExecutionProvider"
    gpu = runtime.StepRunner(tmp_path / "r" / "onnx" / "step.onnx", device="cuda")
    stream = runtime.Stream(gpu, 4)
    assert all(buf.device_name().lower() == "cuda" for pair in stream._buffers for buf in pair.values())
    x = np.random.default_rng(1).integers(1, 20, size=(4, 12))
    ys = np.stack([stream.step(x[:, t]) for t in range(12)], axis=1)
    cpu = runtime.StepRunner(tmp_path / "r" / "onnx" / "step.onnx", device="cpu")
    ref, _, state = cpu.run_padded(x, np.full(4, 12))
    assert np.abs(ys - ref).max() <= CUDA_TOLERANCE
    assert np.abs(stream.state()["h"] - state["h"]).max() <= CUDA_TOLERANCE


@needs_cuda
@pytest.mark.parametrize("cell", ["vanilla", "gru", "lstm"])
def test_cuda_sequence_graph_matches_cpu_on_ragged_bidirectional_batches(tmp_path, small_csv, write_pipeline, cell):
    """cuDNN runs the native operators with sequence_lens and the backward direction: ragged batches,
    lengths down to 1, must give CPU's answers, final states included."""
    from click.testing import CliRunner

    from seqpipe.cli import main

    pipeline = write_pipeline(
        tmp_path / "p.toml",
        small_csv,
        cell=cell,
        topology="bidirectional",
        topology_options="topology_options = {num_layers = 2}",
        extra='graphs = ["sequence"]',
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    path = tmp_path / "r" / "onnx" / "sequence.onnx"
    cpu, gpu = runtime.SequenceRunner(path, device="cpu"), runtime.SequenceRunner(path, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    rng = np.random.default_rng(4)
    x = rng.integers(1, 20, size=(9, 25))
    lengths = np.array([1, 25, 3, 17, 2, 25, 9, 1, 12])
    (a, sa), (b, sb) = cpu.run(x, lengths), gpu.run(x, lengths)
    assert np.abs(a - b).max() <= CUDA_TOLERANCE and all(np.abs(sa[k] - sb[k]).max() <= CUDA_TOLERANCE for k in sa)


@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory):
    """A small trained LSTM (2 stacked layers) exported by a real run."""
    import csv
    import random
    from pathlib import Path

    from click.testing import CliRunner

    from seqpipe.cli import main

    root = tmp_path_factory.mktemp("stream")
    source = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv"
    rows = list(csv.DictReader(source.open(encoding="utf-8")))
    random.Random(2).shuffle(rows)
    with (root / "d.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows[:150])
    (root / "p.toml").write_text(
        '[data]\npath = "d.csv"\n[model]\ncell = "lstm"\ntopology = "stacked"\nhidden_size = 16\n'
        'initial_state = "learnable"\n[input]\nmax_length = 40\n[task.options]\nembedding_size = 8\n'
        '[training]\nepochs = 1\n[export]\ngraphs = ["step"]\nexporter = "torchscript"\n'
    )
    result = CliRunner().invoke(main, ["run", str(root / "p.toml"), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run" / "onnx" / "step.onnx"


@pytest.mark.parametrize("device", DEVICES)
def test_stream_matches_the_padded_loop_and_resets_rows(lstm_export, device):
    runner = runtime.StepRunner(lstm_export, device=device)
    assert runtime.Stream(runner, 1).device == device  # the state buffers live where the session runs
    tolerance = 1e-6 if device == "cpu" else CUDA_TOLERANCE
    x = np.random.default_rng(3).integers(1, 25, size=(4, 15))
    stream = runtime.Stream(runner, 4)
    for t in range(15):
        y = stream.step(x[:, t])
    _, last, state = runtime.StepRunner(lstm_export, device="cpu").run_padded(x, np.full(4, 15))
    assert np.abs(y - last).max() <= tolerance
    assert all(np.abs(stream.state()[n] - state[n]).max() <= tolerance for n in ("h", "c"))
    stream.reset([2])  # sequence 2 ended: only its row starts afresh
    initial = runner.initial_state(4)
    assert np.array_equal(stream.state()["c"][2], initial["c"][2]) and not np.array_equal(
        initial["c"][0], state["c"][0]
    )
    assert np.abs(stream.state()["c"][0] - state["c"][0]).max() <= tolerance


@pytest.mark.parametrize("device", DEVICES)
def test_streams_share_one_session_across_threads(lstm_export, device):
    from concurrent.futures import ThreadPoolExecutor

    runner = runtime.StepRunner(lstm_export, device=device)
    inputs = [np.random.default_rng(seed).integers(1, 25, size=(3, 20)) for seed in range(6)]

    def run(x):
        stream = runtime.Stream(runner, 3)
        for t in range(x.shape[1]):
            y = stream.step(x[:, t])
        return y

    expected = [run(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(run, inputs))
    # each stream owns its state, so threads cannot mix sequences up; on CUDA, concurrent runs may
    # pick other kernels (cuBLAS workspaces), so equal within rounding rather than bit for bit
    tolerance = 0.0 if device == "cpu" else 1e-6
    assert all(np.abs(a - b).max() <= tolerance for a, b in zip(expected, got))


def test_cuda_check_script_refuses_in_one_line_where_it_cannot_run(tmp_path):
    """benchmarks/cuda_check.sh must not pass (nor only skip) on a machine without CUDA."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available() and runtime.cuda_usable():
        pytest.skip("this machine can run the GPU checks; the refusal is for machines that cannot")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_check.sh"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # this python
    result = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("cuda_check: ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the device files are Linux's")
@pytest.mark.parametrize(
    "marker",
    [None, "dev/nvidia0", "dev/nvidiactl", "proc/driver/nvidia", "sys/module/nvidia", "dev/nvhost-ctrl", "dev/dxg"],
)
def test_a_gpu_is_seen_by_its_driver_or_device_files(tmp_path, marker):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "null").touch()
    if marker:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).touch()
    assert runtime.gpu_device_seen(tmp_path) is (marker is not None)
