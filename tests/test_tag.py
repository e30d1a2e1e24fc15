"""The tag task: CoNLL data, unknown-word signatures, per-step graphs proven equal, predict from ONNX alone."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_sentences_alone_equal_batched, load_trained, predict_without_torch
from seqpipe.cli import main
from seqpipe.encoding import WordVocabulary, word_signature

REPO = Path(__file__).resolve().parents[1]
BROWN = REPO / "seqpipe" / "datasets" / "brown_pos" / "brown-universal.conll"


def _pipeline(path: Path, data: str, topology: str = "single", epochs: int = 2, cell: str = "gru") -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [data]
        {data}
        [model]
        cell = "{cell}"
        topology = "{topology}"
        hidden_size = 24
        [task]
        name = "tag"
        [task.options]
        embedding_size = 16
        word_dropout = 0.05
        [training]
        epochs = {epochs}
        batch_size = 32
        [export]
        parity_sequences = 80
    """)
    )
    return path


@pytest.fixture(scope="module")
def small_brown(tmp_path_factory) -> Path:
    """The first 600 bundled sentences: every tag occurs, and a run takes seconds."""
    root = tmp_path_factory.mktemp("tag")
    sentences = BROWN.read_text(encoding="utf-8").split("\n\n")[:600]
    (root / "small.conll").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return root / "small.conll"


@pytest.fixture(scope="module")
def tag_run(small_brown):
    root = small_brown.parent
    result = CliRunner().invoke(
        main, ["run", str(_pipeline(root / "p.toml", f'path = "{small_brown.name}"')), "--out", str(root / "out")]
    )
    assert result.exit_code == 0, result.output
    (root / "run.log").write_text(result.output, encoding="utf-8")
    return root


def test_the_predict_hint_is_a_whole_test_sentence(tag_run, small_brown):
    import shlex

    hint = next(
        line for line in (tag_run / "run.log").read_text(encoding="utf-8").splitlines() if line.startswith("try: ")
    )
    args = shlex.split(hint.removeprefix("try: "))
    assert args[:4] == ["seqpipe", "predict", str(tag_run / "out"), "--tokens"]
    sentences = {
        tuple(line.split("\t")[0] for line in block.splitlines())
        for block in small_brown.read_text(encoding="utf-8").split("\n\n")
    }
    assert (
        len(args[4].split(" ")) > 20 and tuple(args[4].split(" ")) in sentences
    )  # long enough to have been cut before


def test_run_reports_accuracy_and_baseline_and_exports_per_step_graphs(tag_run):
    out = tag_run / "out"
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert 0 < test["baseline_accuracy"] < 1 and 0 < test["accuracy"] <= 1 and test["tokens"] > test["examples"]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}
    assert set(parity["graphs"]["sequence"]["comparisons"]) == {
        "ort_sequence_vs_torch_sequence",
        "ort_sequence_vs_ort_step_loop",
    }
    from seqpipe.serving.runtime import SequenceRunner

    runner = SequenceRunner(out / "onnx" / "sequence.onnx", device="cpu")
    assert runner.spec["outputs"][0]["shape"] == ["batch", "time", 12]
    assert runner.spec["encoding"]["output"]["labels"] == sorted(runner.spec["encoding"]["output"]["labels"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1))
def test_a_sentence_alone_equals_it_padded_in_a_batch(tag_run, lengths, seed):
    lengths = np.array(lengths, dtype=np.int64)
    x = np.random.default_rng(seed).integers(1, 300, size=(len(lengths), int(lengths.max())))
    assert_sentences_alone_equal_batched(tag_run / "out" / "onnx", x, lengths)


def test_predict_tags_without_torch(tag_run, torch_blocked_env):
    cli = CliRunner().invoke(main, ["predict", str(tag_run / "out"), "The jury said so .", "--json"])
    served = predict_without_torch(torch_blocked_env, str(tag_run / "out"), "The jury said so .")
    assert served == [json.loads(cli.stdout)] and served[0]["tokens"] == ["The", "jury", "said", "so", "."]


def test_predict_tags_like_the_torch_model(tag_run):
    sentence = "The committee said Friday that the Zorblatt reforms were overdue ."
    result = CliRunner().invoke(main, ["predict", str(tag_run / "out"), sentence, "--json"])
    assert result.exit_code == 0, result.output
    served = json.loads(result.stdout.strip().splitlines()[-1])
    task, model = load_trained(tag_run)
    ids = torch.tensor([task.encoding.encode(served["tokens"])])
    with torch.no_grad():
        probs = model.sequence_output(ids, torch.tensor([ids.shape[1]]))[0][0]
    assert served["tags"] == [task.labels[i] for i in probs.argmax(-1).tolist()]
    assert np.allclose(served["confidence"], probs.max(-1).values.numpy(), atol=1e-5)


def test_unknown_words_fall_back_to_their_signature():
    vocab = WordVocabulary.fit([["the", "Rumbling", "cat", "the"], ["cat"]], lowercase=False, min_count=2)
    assert word_signature("Rumbling") == "<unk:cap:ing>" and word_signature("1,204") == "<unk:num>"
    assert "Rumbling" not in vocab.symbols and "<unk:cap:ing>" in vocab.symbols
    ids = vocab.encode(["the", "Grumbling", "dog"])
    assert vocab.symbols[ids[1]] == "<unk:cap:ing>" and ids[2] == 1  # "dog": a signature never trained -> <unk>
    assert WordVocabulary.from_spec(vocab.to_spec()) == vocab


def test_bidirectional_tagger_exports_only_the_sequence_graph(small_brown, tmp_path):
    pipeline = _pipeline(tmp_path / "bi.toml", f'path = "{small_brown.as_posix()}"', topology="bidirectional", epochs=1)
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "onnx").iterdir()) == ["sequence.onnx"]
    tagged = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), "The jury said so ."])
    assert tagged.exit_code == 0 and tagged.stdout.strip().count("/") == 5


def test_plugin_cell_tagger_gets_a_per_step_loop_sequence_graph(small_brown, tmp_path, registry):
    """A cell without a native ONNX operator (the IndRNN plugin) gets an ONNX Loop sequence graph
    that yields every step's tags, checked against torch and the step loop by the run's parity."""
    if "indrnn" not in registry.names("cell"):
        pytest.skip("the IndRNN plugin is not installed in this environment")
    pipeline = _pipeline(tmp_path / "p.toml", f'path = "{small_brown.as_posix()}"', epochs=1, cell="indrnn")
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert (
        parity["passed"]
        and parity["graphs"]["sequence"]["comparisons"]["ort_sequence_vs_ort_step_loop"]["y"]["abs"] <= 1e-5
    )
    from seqpipe.serving.runtime import SequenceRunner

    runner = SequenceRunner(tmp_path / "out" / "onnx" / "sequence.onnx", device="cpu")
    y, _ = runner.run(np.array([[3, 4, 5, 0], [6, 7, 8, 9]]), np.array([3, 4]))
    assert y.shape == (2, 4, 12) and np.allclose(y[0, :3].sum(-1), 1, atol=1e-5) and np.all(y[0, 3] == 0)


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("The\tDET\ncat\n", "d.conll:2: expected 'token<TAB>tag'"),
        ("The\tDET\ncat NOUN\n", "1 examples leave no validation or test examples"),
        ("\n\n", "holds no sentences"),
    ],
)
def test_bad_conll_is_one_line(tmp_path, content, fragment):
    (tmp_path / "d.conll").write_text(content)
    result = CliRunner().invoke(
        main, ["run", str(_pipeline(tmp_path / "p.toml", 'path = "d.conll"')), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and fragment in result.output and len(result.output.strip().splitlines()) == 1


def test_pretokenized_input_keeps_the_training_tokens(tag_run):
    """`--tokens`: split at spaces only, so tokens tokenized otherwise in training ('@user', "'s")
    reach the model as they were; the model's own pattern would split them."""
    sentence = "@jury 's #praise said so ."
    plain = json.loads(CliRunner().invoke(main, ["predict", str(tag_run / "out"), sentence, "--json"]).stdout)
    given = CliRunner().invoke(main, ["predict", str(tag_run / "out"), sentence, "--tokens", "--json"])
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["tokens"] == ["@jury", "'s", "#praise", "said", "so", "."]
    assert plain["tokens"] != json.loads(given.stdout)["tokens"]
    assert len(json.loads(given.stdout)["tags"]) == 6


def test_fp16_and_int8_copies_of_a_tagger_open_and_pass(small_brown, tmp_path):
    """The per-step head's fp16 sequence graph once crashed onnxruntime's CPU provider (a segfault
    while opening it): run in a process of its own, so a crash fails this test, not the session."""
    import subprocess
    import sys

    pipeline = _pipeline(tmp_path / "p.toml", f'path = "{small_brown.as_posix()}"', epochs=1, cell="lstm")
    pipeline.write_text(pipeline.read_text().replace("[export]", "[export]\nfp16 = true\nint8 = true"))
    done = subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    graphs = json.loads((tmp_path / "out" / "parity.json").read_text())["graphs"]
    assert {"step.fp16", "sequence.fp16", "step.int8", "sequence.int8"} <= set(graphs)
    assert all(graph["passed"] for graph in graphs.values())
