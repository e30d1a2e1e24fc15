"""`seqpipe export triton`: every generated config.pbtxt parses with Triton's own model-config
protobuf (the tritonclient package ships it) and names the ONNX file's inputs, outputs, dtypes and
dims; the step model, driven as Triton's sequence batcher drives it (state kept between requests,
started from initial_state/), and the sequence model give seqpipe predict's probabilities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seqpipe.cli import main
from seqpipe.serving.metadata import read_spec
from seqpipe.serving.predict import encoding_from_spec, predict
from seqpipe.serving.triton import TRITON_TYPES

TEXTS = ["FREE money!!! click now", "Re: meeting notes", "Ünïcode ✓ subject"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classify run whose first state is learned (so the step model's initial_state is a file)."""
    from conftest import REPO, _write_pipeline

    root = tmp_path_factory.mktemp("triton")
    data = REPO / "tests" / "data" / "subjects-300.jsonl"
    pipeline = _write_pipeline(root / "p.toml", data, hidden=8)
    pipeline.write_text(pipeline.read_text().replace("hidden_size = 8", 'hidden_size = 8\ninitial_state = "learnable"'))
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def repo(trained):
    out = trained / "repo"
    result = CliRunner().invoke(main, ["export", "triton", str(trained / "run"), "--out", str(out), "--name", "spam"])
    assert result.exit_code == 0, result.output
    assert "spam-step: " in result.output and "sequence batching, state kept by Triton" in result.output
    assert f"serve it: tritonserver --model-repository {out.resolve()}" in result.output
    return out


def _config(folder):
    return text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _declared(values, skip=()):
    """{name: (Triton type, dims after the batch axis)} of ONNX inputs or outputs."""
    out = {}
    for v in values:
        if v.name in skip:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim][1:]
        out[v.name] = (TRITON_TYPES[v.type.tensor_type.elem_type], dims)
    return out


def _configured(entries):
    """{name: (Triton type, dims the model sees)}: a [1] reshaped to [] is the batch axis alone."""
    type_name = model_config_pb2.DataType.Name
    return {
        e.name: (type_name(e.data_type), list(e.reshape.shape) if e.HasField("reshape") else list(e.dims))
        for e in entries
    }


def test_every_config_parses_and_matches_its_onnx_file(repo, trained):
    folders = sorted(p for p in repo.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["spam-sequence", "spam-step"]
    for folder in folders:
        config = _config(folder)
        model = onnx.load(str(folder / "1" / "model.onnx"))
        spec = read_spec(model, folder / "1" / "model.onnx")
        assert config.name == folder.name and config.backend == "onnxruntime" and config.max_batch_size == 64
        assert json.loads(config.parameters["seqpipe.spec"].string_value) == spec
        assert json.loads((folder / "seqpipe.spec.json").read_text()) == spec
        original = trained / "run" / "onnx" / f"{spec['graph']}.onnx"
        assert read_spec(onnx.load(str(original)), original) == spec
        carried = {s["input"] for s in spec["states"]} | {s["output"] for s in spec["states"]}
        if spec["graph"] == "step":
            assert config.WhichOneof("scheduling_choice") == "sequence_batching"
            expected_in = _declared(model.graph.input, skip=carried | {"START", "READY"})
            expected_out = _declared(model.graph.output, skip=carried)
            batcher = config.sequence_batching
            assert [c.name for c in batcher.control_input] == ["START", "READY"]
            assert [c.control[0].kind for c in batcher.control_input] == [
                model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
                model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY,
            ]
            states = {s.input_name: s for s in batcher.state}
            assert {(s.input_name, s.output_name) for s in batcher.state} == {
                (s["input"], s["output"]) for s in spec["states"]
            }
            for state in spec["states"]:
                configured = states[state["input"]]
                assert list(configured.dims) == state["shape"][1:] == list(configured.initial_state[0].dims)
                learned = np.asarray(spec["initial_state"]["values"][state["name"]], np.float32)
                stored = (folder / "initial_state" / configured.initial_state[0].data_file).read_bytes()
                assert np.array_equal(np.frombuffer(stored, "<f4").reshape(learned.shape), learned)
        else:
            assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
            expected_in = _declared(model.graph.input)
            expected_out = _declared(model.graph.output)
            assert {i.name for i in config.input if i.optional} == {s["input"] for s in spec["states"]}
        assert _configured(config.input) == expected_in
        assert _configured(config.output) == expected_out


def test_the_models_as_triton_runs_them_give_predicts_probabilities(repo, trained):
    expected = [[r["probabilities"][label] for label in ("ham", "spam")] for r in predict(trained / "run", TEXTS)]
    labels = read_spec(onnx.load(str(repo / "spam-step" / "1" / "model.onnx")), "step")["encoding"]["output"]["labels"]
    assert labels == ["ham", "spam"]

    step = ort.InferenceSession(str(repo / "spam-step" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    config = _config(repo / "spam-step")
    spec = json.loads(config.parameters["seqpipe.spec"].string_value)
    encoding = encoding_from_spec(spec["encoding"]["input"])
    for text, probabilities in zip(TEXTS, expected):
        state = {}  # what Triton keeps for one sequence id: its initial_state, then each state_out
        for s in config.sequence_batching.state:
            raw = (repo / "spam-step" / "initial_state" / s.initial_state[0].data_file).read_bytes()
            state[s.input_name] = np.frombuffer(raw, "<f4").reshape(1, *s.dims)
        for t, token in enumerate(encoding.encode(text)):
            feeds = {
                "x": np.array([token], np.int64),
                "START": np.array([[int(t == 0)]], np.int32),
                "READY": np.array([[1]], np.int32),
                **state,
            }
            y, *outs = step.run(None, feeds)
            names = [o.name for o in step.get_outputs()][1:]
            state = {s.input_name: dict(zip(names, outs))[s.output_name] for s in config.sequence_batching.state}
        assert np.abs(y[0] - probabilities).max() <= 1e-6

    sequence = ort.InferenceSession(
        str(repo / "spam-sequence" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    ids = [encoding.encode(t) for t in TEXTS]
    x = np.zeros((len(ids), max(map(len, ids))), np.int64)
    for row, i in enumerate(ids):
        x[row, : len(i)] = i
    y = sequence.run(["y"], {"x": x, "lengths": np.array([len(i) for i in ids], np.int64)})[0]  # states omitted
    assert np.abs(y - np.array(expected)).max() <= 1e-6


def test_refusals_are_one_line(trained, repo, tmp_path):
    runner = CliRunner()
    taken = runner.invoke(main, ["export", "triton", str(trained / "run"), "--out", str(repo)])
    assert (
        taken.exit_code == 2 and "exists and is not empty; choose a new --out folder, or pass --force" in taken.output
    )
    nothing = runner.invoke(main, ["export", "triton", str(tmp_path), "--out", str(tmp_path / "repo")])
    assert nothing.exit_code == 2 and len(nothing.output.strip().splitlines()) == 1
    assert "no .onnx files" in nothing.output
    changed = tmp_path / "changed"
    shutil.copytree(trained / "run", changed, ignore=shutil.ignore_patterns(".lock"))
    with (changed / "onnx" / "step.onnx").open("ab") as fh:
        fh.write(b"\0")  # changed after the run wrote it: what predict refuses, Triton is not given
    refused = runner.invoke(main, ["export", "triton", str(changed), "--out", str(tmp_path / "repo-changed")])
    assert refused.exit_code != 0 and len(refused.output.strip().splitlines()) == 1
    assert "its SHA-256 differs from the one in manifest.json" in refused.output
    assert not (tmp_path / "repo-changed").exists()
    forced = runner.invoke(
        main, ["export", "triton", str(trained / "run"), "--out", str(repo), "--force", "--name", "spam"]
    )
    assert forced.exit_code == 0, forced.output
