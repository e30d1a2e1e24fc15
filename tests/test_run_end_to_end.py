"""`seqpipe run` for real: train on real data, export, parity, run directory, predict from ONNX alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import predict_without_torch
from seqpipe.cli import main
from seqpipe.errors import SeqpipeError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One small real run shared by the read-only checks below (LSTM, 2 stacked layers)."""
    root = tmp_path_factory.mktemp("run")
    data = root / "data.jsonl"
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "subjects-300.jsonl").read_text().splitlines()]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    pipeline = root / "p.toml"
    pipeline.write_text(
        textwrap.dedent(f"""
        [data]
        path = "{data.name}"
        [model]
        cell = "lstm"
        topology = "stacked"
        hidden_size = 24
        topology_options = {{num_layers = 2, dropout = 0.1}}
        [input]
        max_length = 60
        [task.options]
        embedding_size = 8
        [training]
        epochs = 2
        batch_size = 32
        [export]
        parity_sequences = 60
    """)
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root / "out"


def test_run_directory_holds_everything(trained_run):
    names = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    board = {n for n in names if n.startswith("tensorboard/")}  # the test extra installs tensorboard
    assert len(board) == 1 and board.pop().startswith("tensorboard/events.out.tfevents.")
    assert names - {n for n in names if n.startswith("tensorboard/")} == {
        "pipeline.toml",
        "config.json",
        "model.safetensors",
        "metrics.json",
        "training_curves.png",
        "onnx/step.onnx",
        "onnx/sequence.onnx",
        "parity.json",
        "history.jsonl",
        "trainer_state.json",
        "status.json",
        "manifest.json",
        ".lock",
        "report.html",
    }
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("train", "validation", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0 and 0.0 <= metrics[split]["macro_f1"] <= 1.0
    assert metrics["training"]["epochs_run"] == 2
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["topology_options"] == {"num_layers": 2, "dropout": 0.1}
    assert (
        config["task"]["options"]["label_column"] == "label" and config["input"]["kind"] == "characters"
    )  # defaults are resolved
    assert (trained_run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_label_figures_agree_with_the_test_metrics_and_the_confusion_matrix(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    per_class, confusion, test = metrics["per_class"]["test"], metrics["confusion"]["test"], metrics["test"]
    counts = np.array(confusion["counts"])
    assert confusion["labels"] == sorted(per_class) and counts.sum() == test["examples"]
    assert np.trace(counts) / counts.sum() == pytest.approx(test["accuracy"], abs=1e-6)
    for i, label in enumerate(confusion["labels"]):  # rows: true label; columns: predicted
        figures = per_class[label]
        assert figures["examples"] == counts[i].sum()
        assert figures["recall"] == pytest.approx(counts[i, i] / max(counts[i].sum(), 1))
        assert figures["precision"] == pytest.approx(counts[i, i] / max(counts[:, i].sum(), 1))
    assert np.mean([f["f1"] for f in per_class.values()]) == pytest.approx(test["macro_f1"], abs=1e-6)


def test_per_label_log_lines_name_the_weakest_labels_and_any_never_predicted_right():
    from seqpipe.builtin.per_label import describe_per_class

    figures = {
        f"l{i}": {"precision": i / 10, "recall": i / 10, "f1": i / 10, "examples": 5, "predicted": 5} for i in range(10)
    }
    first, missed = describe_per_class(figures, "add training examples of them", shown=3)
    assert first.startswith("test per label: l0 F1 0.0000") and "l2 F1 0.2000" in first and "l3" not in first
    assert first.endswith("; the 7 others in metrics.json (per_class)")
    assert missed == "test: label(s) 'l0' never predicted right (recall 0); add training examples of them"
    figures = {
        "a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "examples": 3, "predicted": 3},
        "absent": {"precision": None, "recall": None, "f1": None, "examples": 0, "predicted": 0},
    }
    assert describe_per_class(figures, "") == [
        "test per label: a F1 1.0000 (precision 1.0000, recall 1.0000, 3 examples)",
        "test: no example of label(s) 'absent' in the test split; their figures are "
        "left out of macro_f1 unless predicted",
    ]


def test_a_label_absent_from_the_test_split_is_left_out_of_the_per_label_figures_as_of_macro_f1(
    tmp_path, write_pipeline
):
    """Labels in training and validation only (given files): no recall, and no F1 unless predicted,
    so the per-label F1 values average to the run's macro_f1 whichever way the model guesses."""
    rng = np.random.default_rng(0)

    def rows(labels, n):
        return "".join(
            json.dumps({"text": " ".join(rng.choice(list("abcdef"), 4)) + f" {label}", "label": label}) + "\n"
            for label in rng.choice(labels, n)
        )

    (tmp_path / "train.jsonl").write_text(rows(["x", "y", "z"], 90))
    (tmp_path / "validation.jsonl").write_text(rows(["x", "y", "z"], 30))
    (tmp_path / "test.jsonl").write_text(rows(["x", "y"], 30))
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        '[data]\ntrain = "train.jsonl"\nvalidation = "validation.jsonl"\ntest = "test.jsonl"\n'
        "[model]\nhidden_size = 8\n[training]\nepochs = 1\n[task.options]\nstrong_baseline = false\n"
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "test: no example of label(s) 'z' in the test split" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    z = metrics["per_class"]["test"]["z"]
    assert z["examples"] == 0 and z["recall"] is None and (z["f1"] is None) == (z["predicted"] == 0)
    scored = [f["f1"] for f in metrics["per_class"]["test"].values() if f["f1"] is not None]
    assert np.mean(scored) == pytest.approx(metrics["test"]["macro_f1"], abs=1e-6)


def test_checkpoint_is_safetensors(trained_run):
    tensors = load_file(str(trained_run / "model.safetensors"))
    assert any(k.startswith("body.cells.1.") for k in tensors)


def test_parity_report_and_onnx_contract(trained_run):
    parity = json.loads((trained_run / "parity.json").read_text())
    assert parity["passed"] is True and parity["max_abs_diff"] <= 1e-5
    step, sequence = parity["graphs"]["step"], parity["graphs"]["sequence"]
    assert step["sequences"] == sequence["sequences"] == 60
    assert set(step["comparisons"]) == {
        "ort_step_vs_torch_step",
        "ort_step_vs_torch_sequence",
        "torch_step_vs_torch_sequence",
    }
    assert set(sequence["comparisons"]) == {"ort_sequence_vs_torch_sequence", "ort_sequence_vs_ort_step_loop"}
    assert all(
        v["abs"] <= 1e-5 for r in (step, sequence) for group in r["comparisons"].values() for v in group.values()
    )
    model = onnx.load(str(trained_run / "onnx" / "step.onnx"))
    assert [i.name for i in model.graph.input] == ["x", "state_in.h", "state_in.c"]
    assert [o.name for o in model.graph.output] == ["y", "state_out.h", "state_out.c"]
    meta = {p.key: p.value for p in model.metadata_props}
    spec = json.loads(meta["seqpipe.spec"])
    assert meta["seqpipe.state_names"] == "h,c" and meta["seqpipe.task"] == "classify"
    assert spec["states"][0]["shape"] == ["batch", 2, 24]
    assert spec["encoding"]["input"]["symbols"][:2] == ["<pad>", "<unk>"]
    assert spec["encoding"]["output"]["labels"] == ["ham", "spam"]
    assert spec["parity"]["passed"] and spec["parity"]["max_abs_diff"] == step["max_abs_diff"]
    assert spec["initial_state"]["rule"] == "zeros"


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_step_graph_has_dynamic_batch(trained_run, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(str(trained_run / "onnx" / "step.onnx"), providers=["CPUExecutionProvider"])
    state = np.zeros((batch, 2, 24), np.float32)
    y, h, c = session.run(None, {"x": np.full(batch, 5, np.int64), "state_in.h": state, "state_in.c": state})
    assert y.shape == (batch, 2) and h.shape == c.shape == (batch, 2, 24)
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)


def test_predict_agrees_with_torch_and_never_imports_torch(trained_run, torch_blocked_env):
    """Predict in a process where importing torch raises: the embedding app ships without torch."""
    texts = ["FREE money!!! click now", "Re: meeting notes for tomorrow"]
    results = predict_without_torch(torch_blocked_env, str(trained_run), *texts)
    assert [r["text"] for r in results] == texts

    # same answer as the trained torch model
    import torch

    from seqpipe.assembly import resolve_pipeline
    from seqpipe.checkpoint import load_checkpoint
    from seqpipe.plugins import make_plugin_manager
    from seqpipe.registry import build_registry
    from seqpipe.serving.predict import encoding_from_spec

    spec = json.loads(
        {p.key: p.value for p in onnx.load(str(trained_run / "onnx" / "step.onnx")).metadata_props}["seqpipe.spec"]
    )
    resolved = resolve_pipeline(
        trained_run.parent / "p.toml", build_registry(make_plugin_manager(strict=False, warn=lambda line: None)[0])
    )
    task = resolved.make_task()
    task.encoding = encoding_from_spec(spec["encoding"]["input"])
    task.labels = spec["encoding"]["output"]["labels"]
    model = task.build_model(resolved.make_topology)
    load_checkpoint(model, trained_run / "model.safetensors")
    model.eval()
    for r in results:
        ids = torch.tensor([task.encoding.encode(r["text"])])
        logits, _ = model(ids, torch.tensor([ids.shape[1]]))
        probs = torch.softmax(logits, -1)[0].tolist()
        assert np.allclose(list(r["probabilities"].values()), probs, atol=1e-5)


def test_seqpipe_runtime_imports_without_torch():
    code = (
        "import sys, seqpipe.serving.runtime, seqpipe.serving.predict, seqpipe.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("graph", ["step.onnx", "sequence.onnx"])
def test_predict_on_either_onnx_file_gives_the_same_answer(trained_run, graph):
    texts = ["hello there", "WIN $$$ now", "x"]
    by_dir = CliRunner().invoke(main, ["predict", str(trained_run), *texts, "--json"])
    by_file = CliRunner().invoke(main, ["predict", str(trained_run / "onnx" / graph), *texts, "--json"])
    assert by_dir.exit_code == by_file.exit_code == 0, by_file.output
    for a, b in zip(by_dir.stdout.splitlines(), by_file.stdout.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert a["label"] == b["label"] and np.allclose(
            list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5
        )


def test_sequence_graph_accepts_any_batch_and_length(trained_run):
    from seqpipe.serving.runtime import SequenceRunner

    runner = SequenceRunner(trained_run / "onnx" / "sequence.onnx", device="cpu")
    rng = np.random.default_rng(0)
    alone, _ = runner.run(rng.integers(1, 30, size=(1, 7)), np.array([7]))
    for batch, time in [(1, 1), (5, 7), (3, 150)]:
        x = rng.integers(1, 30, size=(batch, time))
        y, states = runner.run(x, np.full(batch, time))
        assert y.shape == (batch, 2) and states["h"].shape == (batch, 2, 24)


@pytest.mark.parametrize("bad,fragment", [("nowhere", "no such file"), ("pipeline.toml", "not a valid ONNX model")])
def test_predict_bad_model_path_is_one_line(trained_run, bad, fragment):
    target = trained_run / bad if bad == "pipeline.toml" else Path(bad)
    result = CliRunner().invoke(main, ["predict", str(target), "hi"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and fragment in result.output


def test_existing_out_dir_is_refused_then_forced(trained_run, tmp_path, small_csv, write_pipeline):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    refused = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out)])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    forced = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "notes.txt").read_text() == "precious" and (out / "onnx" / "step.onnx").is_file()


def test_default_run_dirs_never_collide(tmp_path, small_csv, write_pipeline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv)
    for _ in range(2):
        assert CliRunner().invoke(main, ["run", str(pipeline)]).exit_code == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_training_is_deterministic(tmp_path, small_csv, write_pipeline):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, epochs=2)
    for name in ("a", "b"):
        assert CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / name)]).exit_code == 0
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("a", "b"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_the_weights_validated_are_the_weights_kept(tmp_path, small_csv, write_pipeline, ema):
    """The best epoch's recorded validation metric belongs to the weights the run keeps and exports:
    the last step's weights, or with [training] ema_decay their moving average (a different model)."""
    from conftest import load_trained

    extra = "" if ema is None else f"ema_decay = {ema}"
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, epochs=3)
    text = pipeline.read_text().replace("patience = 1", f"patience = 3\n{extra}")
    pipeline.write_text(text)
    assert CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")]).exit_code == 0
    task, model = load_trained(tmp_path)
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())["training"]["history"]
    best = [r for r in history if r["best"]][-1]["validation"]
    assert task.evaluate(model, "validation")["loss"] == pytest.approx(best["loss"], abs=1e-6)
    if ema is not None:  # the average differs from plain training's last weights
        plain = tmp_path / "plain.toml"
        plain.write_text(text.replace(extra, ""))
        assert CliRunner().invoke(main, ["run", str(plain), "--out", str(tmp_path / "plain")]).exit_code == 0
        a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("out", "plain"))
        assert any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in a)


def test_bidirectional_pipeline_exports_sequence_graph_only(tmp_path, small_csv):
    """A stacked bidirectional LSTM with a learned initial state: no step graph, and the sequence
    graph is exact for a sequence alone and the same sequence padded in a batch."""
    from seqpipe.serving.runtime import SequenceRunner, Stream

    pipeline = tmp_path / "bi.toml"
    pipeline.write_text(
        textwrap.dedent(f"""
        [data]
        path = "{small_csv.as_posix()}"
        [model]
        cell = "lstm"
        topology = "bidirectional"
        hidden_size = 12
        initial_state = "learnable"
        topology_options = {{num_layers = 2, merge = "sum"}}
        [input]
        max_length = 50
        [task.options]
        embedding_size = 8
        [training]
        epochs = 1
    """)
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "onnx").iterdir()) == ["sequence.onnx"]
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["passed"] and list(parity["graphs"]) == ["sequence"]
    runner = SequenceRunner(tmp_path / "out" / "onnx" / "sequence.onnx", device="cpu")
    assert runner.spec["causal"] is False and runner.spec["initial_state"]["rule"] == "learnable"
    rng = np.random.default_rng(1)
    seq = rng.integers(1, 30, size=(1, 9))
    alone_y, alone_s = runner.run(seq, np.array([9]))
    batch = np.zeros((4, 31), np.int64)
    batch[2, :9] = seq[0]
    batch[[0, 1, 3]] = rng.integers(1, 30, size=(3, 31))
    y, states = runner.run(batch, np.array([31, 5, 9, 31]))
    assert np.abs(y[2] - alone_y[0]).max() <= 1e-5
    assert all(np.abs(states[n][2] - alone_s[n][0]).max() <= 1e-5 for n in ("h", "c"))
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), "hello"])
    assert predicted.exit_code == 0 and predicted.stdout.split()[0] in {"ham", "spam"}
    with pytest.raises(SeqpipeError, match="topology 'bidirectional' reads each sequence in both directions"):
        Stream(runner, 2)  # streaming it is a clear error, not a silently wrong answer


def test_int8_and_fp16_copies_are_rechecked_and_their_metric_change_reported(
    tmp_path, small_csv, write_pipeline, monkeypatch
):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, cell="lstm", extra="int8 = true\nfp16 = true")
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert set(parity["graphs"]) == {"step", "sequence", "step.int8", "sequence.int8", "step.fp16", "sequence.fp16"}
    for precision, tolerance in (("int8", 0.15), ("fp16", 0.03)):
        for kind in ("step", "sequence"):
            report = parity["graphs"][f"{kind}.{precision}"]
            assert report["passed"] and report["tolerance"] == tolerance
            assert 0 < report["max_abs_diff"] <= tolerance  # close, and not secretly the fp32 graph
            assert report["rule"].endswith("on y (states recorded, not judged)")
            drift = report["comparisons"][f"ort_{precision}_vs_ort_fp32"]
            assert {"y", "state.h", "state.c"} <= set(drift) and drift["state.c"]["abs"] > 0
            assert set(report["test_metrics"]) == {"fp32", precision, "change"}
        path = tmp_path / "out" / "onnx" / f"step.{precision}.onnx"
        model = onnx.load(str(path))
        spec = json.loads({p.key: p.value for p in model.metadata_props}["seqpipe.spec"])
        assert spec["precision"] == precision and spec["parity"]["against"].startswith(
            "onnx/step.onnx (fp32, onnxruntime "
        )
        # the copy keeps the ONNX contract: float32 x/state in, float32 y/state out, same names
        io = [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]
        assert ("state_in.h", onnx.TensorProto.FLOAT) in io and ("y", onnx.TensorProto.FLOAT) in io
        predicted = CliRunner().invoke(
            main, ["predict", str(tmp_path / "out"), "--precision", precision, "--json", "win cash"]
        )
        assert predicted.exit_code == 0, predicted.output
        assert json.loads(predicted.stdout)["label"] in {"ham", "spam"}
    from seqpipe.serving import runtime

    asked, choose = [], runtime.choose_providers  # int8 copies are opened on CPU even where CUDA is offered
    monkeypatch.setattr(runtime, "choose_providers", lambda device="auto": asked.append(device) or choose(device))
    assert runtime.open_export(tmp_path / "out", precision="int8").providers == ["CPUExecutionProvider"] and asked == [
        "cpu"
    ]
    with pytest.raises(SeqpipeError, match="int8 copies are quantized for CPU serving"):
        runtime.open_export(tmp_path / "out", precision="int8", device="cuda")
    fp32 = [r["max_abs_diff"] for kind, r in parity["graphs"].items() if "." not in kind]
    assert parity["max_abs_diff"] == max(fp32) <= 1e-5  # the run's figure is torch against onnxruntime
    half = onnx.load(str(tmp_path / "out" / "onnx" / "step.fp16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)  # weights really are fp16


def test_failed_parity_fails_the_run_loudly(tmp_path, small_csv, write_pipeline):
    """An int8 copy cannot meet a 1e-9 tolerance: the run must exit 1 naming the file not to serve."""
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, extra="int8 = true\nint8_tolerance = 1e-9")
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "do not serve onnx/step.int8.onnx" in last
    assert "onnx/step.int8.onnx (its fp32 original and it differ by " in last and "> 1e-09)" in last
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["passed"] is False


def test_bidirectional_plugin_cell_gets_a_sequence_graph(tmp_path, small_csv, registry, write_pipeline):
    """A bidirectional topology of a cell without a native ONNX operator (the IndRNN plugin) exports a
    sequence graph of Loops over each direction's exported cell, and passes parity."""
    if "indrnn" not in registry.names("cell"):
        pytest.skip("the IndRNN plugin is not installed in this environment")
    pipeline = write_pipeline(
        tmp_path / "bi.toml",
        small_csv,
        cell="indrnn",
        topology="bidirectional",
        hidden=12,
        topology_options="topology_options = {num_layers = 2}",
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "onnx").iterdir()) == ["sequence.onnx"]
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["passed"] and parity["graphs"]["sequence"]["max_abs_diff"] <= 1e-5
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), "hello"])
    assert predicted.exit_code == 0 and predicted.stdout.split()[0] in {"ham", "spam"}
