"""The seq2seq task: encoder and decoder graphs proven equal to torch, decoding from ONNX alone
equal to torch's greedy decoding, attention masked to each source, metrics from torchmetrics."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import load_trained, predict_without_torch
from seqpipe.cli import main

REPO = Path(__file__).resolve().parents[1]


def _pipeline(
    path: Path,
    attention: str = "additive",
    cell: str = "gru",
    topology: str = "single",
    epochs: int = 2,
    source: str = "",
    target: str = "",
) -> Path:
    """``source`` and ``target``: more keys for the [input] and [output] tables (kind = "subwords", …)."""
    path.write_text(
        textwrap.dedent(f"""
        [data]
        path = "small.tsv"
        [model]
        cell = "{cell}"
        topology = "{topology}"
        hidden_size = 32
        [input]
        column = "word"
        {source}
        [output]
        column = "phonemes"
        {target}
        [task]
        name = "seq2seq"
        [task.options]
        attention = "{attention}"
        embedding_size = 16
        heatmap_examples = 2
        [training]
        epochs = {epochs}
        batch_size = 64
        [export]
        parity_sequences = 120
    """)
    )
    return path


@pytest.fixture(scope="module")
def small_tsv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("g2p")
    lines = (REPO / "seqpipe" / "datasets" / "cmudict_g2p" / "cmudict-12k.tsv").read_text(encoding="utf-8").splitlines()
    (root / "small.tsv").write_text("\n".join(lines[:1201]) + "\n", encoding="utf-8")
    return root / "small.tsv"


def _run(root: Path, **kwargs) -> Path:
    result = CliRunner().invoke(main, ["run", str(_pipeline(root / "p.toml", **kwargs)), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.fixture(scope="module", params=["additive", "dot", "none"])
def g2p_run(request, small_tsv, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"g2p-{request.param}")
    (root / "small.tsv").write_bytes(small_tsv.read_bytes())
    cell = "lstm" if request.param == "dot" else "gru"
    return request.param, root, _run(root, attention=request.param, cell=cell)


def test_run_exports_encoder_and_decoder_with_parity(g2p_run):
    attention, _, out = g2p_run
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["decoder.onnx", "encoder.onnx"]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"encoder", "decoder"}
    compared = parity["graphs"]["decoder"]["comparisons"]["ort_step_vs_torch_step"]
    assert ("attention" in compared) == (attention != "none")
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["token_error_rate"] and 0 <= metrics["test"]["exact_match"] <= 1
    assert (out / "attention.png").exists() == (attention != "none")
    assert len(metrics["examples"]) == 6


def test_onnx_transcription_equals_torch_greedy_decoding(g2p_run):
    from seqpipe.builtin.seq2seq.serve import Transcriber
    from seqpipe.builtin.seq2seq.task import collate

    _, root, out = g2p_run
    task, model = load_trained(root)
    words = ["seqpipe", "a", "pronunciation", "zebra"]
    served = Transcriber(out, device="cpu").transcribe(words)
    batch = collate([(task.source.encode(w), []) for w in words])
    expected = [task.target.join([task.target_symbols[i] for i in ids]) for ids in task.greedy(model, batch)]
    assert [r["text"] for r in served] == expected
    result = CliRunner().invoke(main, ["predict", str(out), *words, "--json"])
    assert result.exit_code == 0 and [json.loads(line)["text"] for line in result.stdout.splitlines()] == expected


def test_predict_transcribes_without_torch(g2p_run, torch_blocked_env):
    _, _, out = g2p_run
    served = predict_without_torch(torch_blocked_env, str(out), "seqpipe", "zebra", "--beam", "3")
    cli = CliRunner().invoke(main, ["predict", str(out), "seqpipe", "zebra", "--beam", "3", "--json"])
    assert served == [json.loads(line) for line in cli.stdout.splitlines()] and served[0]["source"] == "seqpipe"


def test_beam_search_is_at_least_as_probable_as_greedy(g2p_run):
    from seqpipe.builtin.seq2seq.serve import Transcriber

    _, _, out = g2p_run
    transcriber = Transcriber(out, device="cpu")
    for word in ("quattrocchi", "ok"):
        greedy, beam = transcriber.transcribe([word])[0], transcriber.transcribe([word], beam=4)[0]
        if greedy["finished"]:
            assert beam["log_probability"] >= greedy["log_probability"] - 1e-6


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 14), min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1))
def test_a_source_alone_equals_it_padded_in_a_batch(g2p_run, lengths, seed):
    """Encoder memory and state, and the decoder's first step (attention masked to the source's
    own length), are the same for a source alone and the same source padded beside longer ones."""
    from seqpipe.serving.runtime import OnnxGraph

    attention, _, out = g2p_run
    encoder, decoder = (
        OnnxGraph(out / "onnx" / "encoder.onnx", device="cpu"),
        OnnxGraph(out / "onnx" / "decoder.onnx", device="cpu"),
    )
    lengths = np.array(lengths, dtype=np.int64)
    x = np.random.default_rng(seed).integers(2, 20, size=(len(lengths), int(lengths.max())))
    names = [s["name"] for s in decoder.spec["states"]]

    def first_step(xb, lb):
        memory, *states = encoder.session.run(None, {"x": xb, "lengths": lb})
        feeds = {"x": np.full(len(lb), 2, np.int64), **{f"state_in.{n}": s for n, s in zip(names, states)}}
        if attention != "none":
            feeds.update(memory=memory, memory_lengths=lb)
        return memory, states, decoder.session.run(None, feeds)

    memory, states, step = first_step(x, lengths)
    for row, n in enumerate(lengths):
        m1, s1, step1 = first_step(x[row : row + 1, :n], lengths[row : row + 1])
        assert np.abs(m1[0] - memory[row, :n]).max() <= 1e-5
        assert all(np.abs(a[0] - b[row]).max() <= 1e-5 for a, b in zip(s1, states))
        assert np.abs(step1[0][0] - step[0][row]).max() <= 1e-5
        if attention != "none":
            assert np.abs(step[1][row, n:]).max(initial=0.0) == 0.0  # no weight on padding
            assert np.abs(step1[1][0] - step[1][row, :n]).max() <= 1e-5


def test_metrics_are_token_edit_distances_and_sacrebleu_scores():
    import sacrebleu

    from seqpipe.builtin.encodings import Characters, CharactersOptions, Words, WordsOptions
    from seqpipe.builtin.seq2seq.task import Seq2SeqTask

    task = Seq2SeqTask.__new__(Seq2SeqTask)
    task.target = Words(WordsOptions())  # tokens are the space-separated phonemes
    predicted, reference = ["K AE T", "D AO G Z"], ["K AE T", "D AO G"]
    scores = task.scores(predicted, reference)
    assert scores["exact_match"] == 0.5 and scores["token_error_rate"] == pytest.approx(1 / 6)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predicted, [reference]).score)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predicted, [reference]).score)
    task.target = Characters(CharactersOptions())  # tokens are characters: one wrong letter in eight
    assert task.scores(["galaxy", "caffe"], ["galaxy", "cafe"])["token_error_rate"] == pytest.approx(1 / 10)


def test_seq2seq_refuses_a_bidirectional_model(tmp_path, small_tsv):
    (tmp_path / "small.tsv").write_bytes(small_tsv.read_bytes())
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path / "p.toml", topology="bidirectional"))])
    assert result.exit_code == 2 and "decodes step by step" in result.output


def test_plugin_cell_seq2seq_encodes_with_cell_loops(tmp_path, small_tsv, registry):
    """A cell without a native ONNX operator (the IndRNN plugin): its encoder graph is an ONNX Loop
    over the exported cell, and both graphs pass parity."""
    if "indrnn" not in registry.names("cell"):
        pytest.skip("the IndRNN plugin is not installed in this environment")
    (tmp_path / "small.tsv").write_bytes(small_tsv.read_bytes())
    out = _run(tmp_path, attention="dot", cell="indrnn", epochs=1)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"encoder", "decoder"}
    assert "Loop" in {n.op_type for n in __import__("onnx").load(str(out / "onnx" / "encoder.onnx")).graph.node}


def test_nearest_neighbour_baseline_and_the_predict_hint_come_from_the_data(tmp_path):
    """The baseline answers each source with the target of the most similar training source: a
    source seen in training gets its own target back; the run's predict hint is its own test data."""
    rows = [("cat", "K AE T"), ("cats", "K AE T S"), ("dog", "D AO G"), ("dogs", "D AO G Z"), ("bird", "B ER D")] * 8
    data = tmp_path / "d.tsv"
    data.write_text("source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        '[data]\npath = "d.tsv"\n[model]\ncell = "gru"\nhidden_size = 8\n[task]\nname = "seq2seq"\n'
        "[task.options]\nembedding_size = 4\n[training]\nepochs = 1\n[export]\nparity_sequences = 8\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]
    assert test["baseline_exact_match"] == 1.0 and test["baseline_token_error_rate"] == 0.0
    hint = next(line for line in result.output.splitlines() if line.startswith("try: seqpipe predict"))
    assert any(f" {s}" in hint for s, _ in rows) and "pronounce" not in hint


@pytest.mark.slow
def test_subword_source_and_target_train_export_and_decode_from_onnx_alone(small_tsv, tmp_path, torch_blocked_env):
    """BPE pieces in and out: the tokenizers travel in the metadata, and onnxruntime's decoding,
    joined by the stored tokenizer without torch, equals torch's greedy decoding."""
    from seqpipe.builtin.seq2seq.task import collate

    (tmp_path / "small.tsv").write_bytes(small_tsv.read_bytes())
    out = _run(
        tmp_path, source='kind = "subwords"\nvocab_size = 120', target='kind = "subwords"\nvocab_size = 80', epochs=3
    )
    task, model = load_trained(tmp_path)
    assert task.source.kind == task.target.kind == "subwords"
    words = [s for s, _ in task.pairs["test"][:5]]
    batch = collate([(task.source.encode(w), []) for w in words])
    expected = [task.target.join([task.target_symbols[i] for i in ids]) for ids in task.greedy(model, batch)]
    served = predict_without_torch(torch_blocked_env, str(out), *words)
    assert [r["text"] for r in served] == expected
    assert all(set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ ") for text in expected)  # pieces joined back into phonemes


@pytest.mark.slow
def test_number_vector_sources_train_export_and_decode_from_onnx_alone(tmp_path, torch_blocked_env):
    """Number vectors in (the sign of each step's first feature, spelt out), words out."""
    from seqpipe.builtin.seq2seq.task import collate

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(600):
        x = np.round(rng.normal(size=(int(rng.integers(1, 6)), 2)), 3)
        rows.append({"readings": x.tolist(), "signs": " ".join("plus" if v > 0 else "minus" for v in x[:, 0])})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        textwrap.dedent("""
        [data]
        path = "d.jsonl"
        [input]
        kind = "numbers"
        column = "readings"
        [output]
        column = "signs"
        [model]
        hidden_size = 32
        [task]
        name = "seq2seq"
        [task.options]
        embedding_size = 16
        max_target_length = 8
        [training]
        epochs = 12
        batch_size = 32
    """)
    )
    result = CliRunner().invoke(main, ["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]
    assert test["token_error_rate"] < 0.5 * test["baseline_token_error_rate"], test
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["passed"]
    task, model = load_trained(tmp_path)
    sources = [[[0.5, 1.0], [-0.7, 0.0], [0.9, 2.0]], [[-1.2, 0.3]]]
    batch = collate([(task.source.encode(np.asarray(s, np.float32)), []) for s in sources])
    expected = [task.target.join([task.target_symbols[i] for i in ids]) for ids in task.greedy(model, batch)]
    served = predict_without_torch(torch_blocked_env, str(tmp_path / "out"), *(json.dumps(s) for s in sources))
    assert [r["text"] for r in served] == expected
