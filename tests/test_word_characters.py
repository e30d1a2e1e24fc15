"""Character-aware words (``[input] kind = "words"``, ``characters = N``): each step is a word id and
its character ids, read by a character CNN beside the word embedding. Real runs on Brown sentences,
graphs proven equal, served without torch, data accounted for."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_sentences_alone_equal_batched, load_trained, predict_without_torch
from seqpipe.builtin.encodings import Words, WordsOptions
from seqpipe.cli import main
from seqpipe.encoding import word_character_ids
from seqpipe.models import hide_tokens
from seqpipe.word_characters import WordCharacters

REPO = Path(__file__).resolve().parents[1]
BROWN = REPO / "seqpipe" / "datasets" / "brown_pos" / "brown-universal.conll"
PER_WORD = 8


@pytest.fixture(scope="module")
def char_run(tmp_path_factory) -> Path:
    """A causal GRU tagger with character-aware words, trained on 600 Brown sentences."""
    root = tmp_path_factory.mktemp("word-characters")
    (root / "small.conll").write_text(
        "\n\n".join(BROWN.read_text(encoding="utf-8").split("\n\n")[:600]) + "\n", encoding="utf-8"
    )
    (root / "p.toml").write_text(
        textwrap.dedent(f"""
        [data]
        path = "small.conll"
        [model]
        cell = "gru"
        hidden_size = 24
        [input]
        kind = "words"
        characters = {PER_WORD}
        character_features = 12
        [task]
        name = "tag"
        [task.options]
        embedding_size = 16
        word_dropout = 0.1
        [training]
        epochs = 3
        batch_size = 32
        [export]
        parity_sequences = 80
    """)
    )
    result = CliRunner().invoke(main, ["run", str(root / "p.toml"), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    (root / "output.txt").write_text(result.output)
    return root


def test_run_trains_exports_both_graphs_and_proves_them(char_run):
    out = char_run / "out"
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"step", "sequence"}
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["accuracy"] > 0.5  # 3 epochs on 600 sentences: well above chance over 12 tags, not tuned
    from seqpipe.serving.runtime import SequenceRunner, StepRunner

    sequence = SequenceRunner(out / "onnx" / "sequence.onnx", device="cpu")
    assert sequence.spec["inputs"][0]["shape"] == ["batch", "time", 1 + PER_WORD]
    assert StepRunner(out / "onnx" / "step.onnx", device="cpu").spec["inputs"][0]["shape"] == ["batch", 1 + PER_WORD]
    assert sequence.spec["encoding"]["input"]["characters"]["per_word"] == PER_WORD


def test_shortened_words_are_counted(char_run):
    """Words longer than input.characters lose their middle characters to the CNN: counted, reported."""
    task, _ = load_trained(char_run)
    words = [w for split in task.splits for sentence in task.words[split] for w in sentence]
    long = sum(len(w) > PER_WORD for w in words)
    assert long > 0
    assert f"{long:,} words longer than input.characters = {PER_WORD}" in (char_run / "output.txt").read_text()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sentences=st.lists(
        st.lists(st.text(alphabet="abcXYZ-19é.", min_size=1, max_size=14), min_size=1, max_size=9),
        min_size=1,
        max_size=4,
    )
)
def test_sentences_alone_equal_them_batched_in_both_graphs(char_run, sentences):
    """Ragged batches of made-up words (unknown words and characters included): the sequence graph,
    the step graph stepped, and each sentence run alone agree to 1e-5."""
    from seqpipe.encoding import pad_ids

    task, _ = load_trained(char_run)
    x, lengths = pad_ids([task.encoding.encode(s) for s in sentences])
    assert_sentences_alone_equal_batched(char_run / "out" / "onnx", x, lengths)


def test_predict_equals_the_torch_model_with_and_without_torch(char_run, torch_blocked_env):
    sentence = "The Zorblattian committee quickly re-examined 1,204 unreadable proposals ."
    result = CliRunner().invoke(main, ["predict", str(char_run / "out"), sentence, "--json"])
    assert result.exit_code == 0, result.output
    served = json.loads(result.stdout.strip().splitlines()[-1])
    task, model = load_trained(char_run)
    ids = torch.tensor([task.encoding.encode(served["tokens"])])
    assert ids.shape == (1, len(served["tokens"]), 1 + PER_WORD)
    with torch.no_grad():
        probs = model.sequence_output(ids, torch.tensor([ids.shape[1]]))[0][0]
    assert served["tags"] == [task.labels[i] for i in probs.argmax(-1).tolist()]
    assert predict_without_torch(torch_blocked_env, str(char_run / "out"), sentence) == [served]


@given(word=st.text(min_size=1, max_size=30), per_word=st.integers(1, 20))
def test_a_word_gives_its_characters_or_its_prefix_and_suffix(word, per_word):
    index = {ch: i + 2 for i, ch in enumerate(sorted(set(word)))}
    ids = word_character_ids(word, index, per_word)
    assert len(ids) == per_word
    shown = word if len(word) <= per_word else word[: per_word - per_word // 2] + word[len(word) - per_word // 2 :]
    assert ids == [index[ch] for ch in shown] + [0] * (per_word - len(shown))
    assert word_character_ids(word, {}, per_word)[: len(shown)] == [1] * len(shown)  # unseen characters: unknown


def test_the_encoding_is_rebuilt_from_its_metadata():
    words = Words(WordsOptions(characters=6))
    words.fit([["The", "jury", "said", "so", "."], ["The", "Jury", "praised", "it"]])
    again = Words.from_spec(json.loads(json.dumps(words.to_spec())))
    sentence = ["The", "jurymen", "said", "Ünïcode", "."]
    assert again.encode(sentence) == words.encode(sentence)
    assert words.encode(sentence)[1][1:] == [words.characters._index.get(c, 1) for c in "jurmen"]  # first 3, last 3


@given(per_word=st.integers(1, 6), batch=st.integers(1, 3), time=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_each_word_is_read_alone_and_padding_reads_as_nothing(per_word, batch, time, seed):
    """A step's vector depends on that word and its characters only (not on its neighbours, its
    position or the batch), and a padding step (all ids 0) reads as the zero vector."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = WordCharacters(9, 4, 7, per_word, 5).eval()
    chars = torch.randint(1, 7, (batch, time, per_word), generator=g)
    spelled = torch.randint(1, per_word + 1, (batch, time, 1), generator=g)
    x = torch.cat(
        [torch.randint(1, 9, (batch, time, 1), generator=g), chars.masked_fill(torch.arange(per_word) >= spelled, 0)],
        -1,
    )
    out = module(x)
    assert out.shape == (batch, time, 4 + 5)
    for b in range(batch):
        for t in range(time):
            assert torch.allclose(module(x[b, t][None])[0], out[b, t], atol=1e-6)
    assert torch.equal(module(torch.zeros(1, 1 + per_word, dtype=torch.int64)), torch.zeros(1, 9))


def test_word_dropout_hides_word_ids_and_keeps_their_characters():
    torch.manual_seed(0)
    tokens = torch.randint(2, 50, (64, 10, 1 + 4))
    tokens[:, 7:] = 0  # padding steps
    hidden = hide_tokens(tokens, 0.5, lambda ids: torch.full_like(ids, 1))
    assert torch.equal(hidden[..., 1:], tokens[..., 1:])
    changed = hidden[..., 0] != tokens[..., 0]
    assert (hidden[..., 0][changed] == 1).all() and not changed[:, 7:].any()
    assert 0.4 < changed[:, :7].float().mean() < 0.6


def test_a_classifier_reads_word_characters_with_a_streaming_pooling_head(tmp_path, small_csv):
    """classify: words and their characters, mean pooling (the step graph carries its running
    statistics), int8 copies too; both graphs pass parity and predict serves them."""
    (tmp_path / "p.toml").write_text(
        textwrap.dedent(f"""
        [data]
        path = "{small_csv.as_posix()}"
        [model]
        hidden_size = 16
        [input]
        kind = "words"
        characters = 6
        character_features = 8
        [task]
        name = "classify"
        [task.options]
        embedding_size = 8
        pooling = "mean"
        token_dropout = 0.1
        [training]
        epochs = 2
        [export]
        int8 = true
        parity_sequences = 40
    """)
    )
    result = CliRunner().invoke(main, ["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["passed"] and {"step", "sequence", "step.int8", "sequence.int8"} <= set(parity["graphs"])
    served = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), "Unbelievable offers inside", "--json"])
    assert served.exit_code == 0 and json.loads(served.stdout.strip().splitlines()[-1])["label"] in ("ham", "spam")
