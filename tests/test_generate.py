"""The generate task: conditioned initial state, init and step graphs proven equal, decoding from
ONNX alone equal to decoding from torch (greedy, sampled, beam), and a bigram baseline."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import load_trained, predict_without_torch
from seqpipe.cli import main
from seqpipe.serving.decoding import beam_search, sample

REPO = Path(__file__).resolve().parents[1]


def _pipeline(path: Path, rule: str = "conditioned", topology: str = "single", epochs: int = 3) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [data]
        dataset = "census-names"
        [model]
        cell = "lstm"
        topology = "{topology}"
        hidden_size = 32
        initial_state = "{rule}"
        [task]
        name = "generate"
        [task.options]
        text_column = "name"
        condition_column = "gender"
        max_length = 12
        samples = 3
        beam = 3
        [training]
        epochs = {epochs}
        batch_size = 128
        [export]
        parity_sequences = 100
    """)
    )
    return path


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    result = CliRunner().invoke(main, ["run", str(_pipeline(root / "p.toml")), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def trained(names_run):
    return load_trained(names_run)


def test_run_exports_init_and_step_graphs_with_parity_and_samples(names_run):
    out = names_run / "out"
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["init.onnx", "step.onnx"]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and set(parity["graphs"]) == {"step", "init"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["perplexity"] > 1 and metrics["test"]["bigram_perplexity"] > 1
    assert set(metrics["samples"]) == {"female", "male"} and 0 <= metrics["sampled_not_in_training"] <= 1
    from seqpipe.serving.runtime import StepRunner

    step = StepRunner(out / "onnx" / "step.onnx", device="cpu")
    assert step.spec["initial_state"]["rule"] == "conditioned" and step.spec["initial_state"]["graph"] == "init.onnx"


def _torch_step(model):
    def step(tokens, state):
        with torch.no_grad():
            y, new = model.step(torch.from_numpy(tokens), tuple(torch.from_numpy(state[n]) for n in model.state_names))
        return y.numpy(), {n: s.numpy() for n, s in zip(model.state_names, new)}

    return step


@pytest.mark.parametrize("how", ["greedy", "sampled", "beam"])
def test_onnx_decoding_equals_torch_decoding(names_run, trained, how):
    from seqpipe.builtin.generate.serve import Generator

    task, model = trained
    generator = Generator(names_run / "out", device="cpu")
    for condition in ("female", "male"):
        with torch.no_grad():
            start = model.initial.from_condition(
                torch.tensor([task.conditions.index(condition)] * (4 if how == "sampled" else 1))
            )
        state = {n: s.numpy() for n, s in zip(model.state_names, start)}
        kwargs = dict(sos=task.sos_id, eos=task.eos_id, max_length=12)
        if how == "beam":
            expected = beam_search(_torch_step(model), state, beam=3, **kwargs)
            served = generator.generate(condition, count=3, beam=3)
        else:
            temperature = 0.9 if how == "sampled" else 0.0
            expected = sample(
                _torch_step(model), state, temperature=temperature, rng=np.random.default_rng(7), **kwargs
            )
            served = generator.generate(condition, count=4, temperature=temperature, seed=7)
        assert [s["text"] for s in served] == ["".join(task.vocabulary.symbols[t] for t in h.tokens) for h in expected]
        assert np.allclose([s["log_probability"] for s in served], [h.log_probability for h in expected], atol=1e-4)


def test_predict_generates_without_torch(names_run, torch_blocked_env):
    args = [str(names_run / "out"), "--condition", "male", "--count", "3", "--temperature", "0.7", "--seed", "5"]
    served = predict_without_torch(torch_blocked_env, *args)
    cli = CliRunner().invoke(main, ["predict", *args, "--json"])
    assert served == [json.loads(line) for line in cli.stdout.splitlines()] and len(served) == 3
    beams = predict_without_torch(
        torch_blocked_env, str(names_run / "out"), "--condition", "female", "--beam", "4", "--count", "4"
    )
    assert [b["log_probability"] for b in beams] == sorted((b["log_probability"] for b in beams), reverse=True)


def test_condition_changes_the_state(trained):
    _, model = trained
    with torch.no_grad():
        female, male = model.initial.from_condition(torch.tensor([0, 1]))[0]
    assert (female - male).abs().max() > 1e-3


def test_beam_search_finds_the_most_probable_sequence():
    """On a tiny known distribution, beam search returns sequences best first with exact scores."""
    table = np.array([[0.0, 0.0, 0.0, 0.6, 0.4], [0.0, 0.0, 0.9, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])

    def step(tokens, state):  # token 0 = <sos>; 3 -> row 1, 4 -> row 2; <eos> = 2
        rows = np.where(tokens == 0, 0, np.where(tokens == 3, 1, 2))
        return table[rows], state

    found = beam_search(step, {"h": np.zeros((1, 1))}, sos=0, eos=2, max_length=3, beam=2)
    assert [h.tokens for h in found][0] == [3] and found[0].log_probability == pytest.approx(np.log(0.6 * 0.9))
    greedy = sample(step, {"h": np.zeros((1, 1))}, sos=0, eos=2, max_length=3)
    assert greedy[0].tokens == [3] and greedy[0].finished


@pytest.mark.parametrize(
    "rule,topology,fragment",
    [
        ("zeros", "single", "model.initial_state: task 'generate' accepts 'conditioned'"),
        ("conditioned", "bidirectional", "model.topology: task 'generate' decodes step by step"),
    ],
)
def test_generate_refuses_what_it_cannot_decode(tmp_path, rule, topology, fragment):
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path / "p.toml", rule, topology))])
    assert result.exit_code == 2 and fragment in result.output


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_reduced_precision_copies_are_refused_for_a_conditioned_state(tmp_path, precision):
    """Reduced-precision copies are checked from the file's initial state, which 'conditioned' has
    none of: the check must refuse the option, naming it, before any data is read."""
    pipeline = _pipeline(tmp_path / "p.toml")
    pipeline.write_text(
        pipeline.read_text().replace("parity_sequences = 100", f"parity_sequences = 100\n{precision} = true")
    )
    result = CliRunner().invoke(main, ["check", str(pipeline)])
    assert result.exit_code == 2, result.output
    assert f"export.{precision}:" in result.output and f"remove {precision} = true" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_conditioned_is_refused_by_tasks_without_a_condition(tmp_path, small_csv, write_pipeline):
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv)
    pipeline.write_text(
        pipeline.read_text().replace("hidden_size = 16", 'hidden_size = 16\ninitial_state = "conditioned"')
    )
    result = CliRunner().invoke(main, ["check", str(pipeline)])
    assert result.exit_code == 2 and "'conditioned' needs a task with a condition" in result.output


def test_vector_condition_exports_a_float_init_graph(tmp_path):
    """A condition vector (here the name's census popularity) instead of a label: standardised on
    training rows, a float32 init graph, parity, and predict taking the numbers."""
    pipeline = _pipeline(tmp_path / "p.toml", epochs=1)
    pipeline.write_text(pipeline.read_text().replace('condition_column = "gender"', 'condition_columns = ["percent"]'))
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    from seqpipe.serving.runtime import OnnxGraph

    init = OnnxGraph(tmp_path / "out" / "onnx" / "init.onnx", device="cpu")
    assert init.spec["inputs"][0] == {"name": "condition", "dtype": "float32", "shape": ["batch", 1]}
    condition = init.spec["encoding"]["condition"]
    assert condition["kind"] == "vector" and condition["columns"] == ["percent"] and condition["scaling"]["std"][0] > 0
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["passed"]
    served = CliRunner().invoke(
        main, ["predict", str(tmp_path / "out"), "--condition", "1.5", "--count", "2", "--temperature", "1"]
    )
    assert served.exit_code == 0 and len(served.stdout.strip().splitlines()) == 2
    wrong = CliRunner().invoke(main, ["predict", str(tmp_path / "out"), "--condition", "female"])
    assert wrong.exit_code == 2 and "conditioned on 1 number(s) (percent)" in wrong.output
