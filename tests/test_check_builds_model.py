"""`seqpipe check` builds the model as `run` does and puts one training batch through it and the
task's loss: plugin code that cannot do either fails at check (and at run, before a run directory
exists) in one line naming the plugin, never as a traceback; a working pipeline trains exactly as
before (the check draws nothing from torch's random state)."""

from __future__ import annotations

import shutil

import torch
from click.testing import CliRunner

from conftest import REPO, _write_pipeline
from seqpipe.builtin.classify.task import ClassifyTask
from seqpipe.cli import main


def _pipeline(tmp_path):
    shutil.copy(REPO / "tests" / "data" / "subjects-300.jsonl", tmp_path / "data.jsonl")
    return _write_pipeline(tmp_path / "p.toml", tmp_path / "data.jsonl", hidden=8)


def test_check_says_the_model_it_built(tmp_path):
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "parameters; a first training batch goes through it and the loss" in result.output


def test_a_loss_that_raises_is_one_line_at_check_and_at_run_before_any_run_directory(tmp_path, monkeypatch):
    def broken_loss(self, model, batch):
        raise ValueError("labels out of range")

    monkeypatch.setattr(ClassifyTask, "loss", broken_loss)
    pipeline = _pipeline(tmp_path)
    for args in (["check", str(pipeline)], ["run", str(pipeline), "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert (
            "task 'classify' from plugin 'seqpipe.builtin.classify.task' failed while computing the loss of a first "
            "training "
            "batch: ValueError: labels out of range"
        ) in result.output
    assert not (tmp_path / "run").exists()


def test_a_loss_that_is_not_a_scalar_is_refused(tmp_path, monkeypatch):
    real = ClassifyTask.loss
    monkeypatch.setattr(ClassifyTask, "loss", lambda self, model, batch: real(self, model, batch).repeat(3))
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path))])
    assert result.exit_code == 2 and "loss() returned a tensor of shape (3,), not a scalar tensor" in result.output


def test_a_model_that_cannot_be_built_is_named_at_check(tmp_path, monkeypatch):
    def broken_build(self, make_topology, initial_state="zeros", initial_state_scale=0.1):
        return make_topology(10**12)

    monkeypatch.setattr(ClassifyTask, "build_model", broken_build)
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path))])
    assert result.exit_code == 2 and "failed while building the model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_check_leaves_torch_random_state_as_it_was(tmp_path):
    from seqpipe.assembly import resolve_pipeline
    from seqpipe.plugins import load_registry

    resolved = resolve_pipeline(_pipeline(tmp_path), load_registry()[0])
    task, _, _ = resolved.prepare()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    resolved.build_model(task)
    torch.manual_seed(0)
    torch.nn.Linear(3, 3)  # what building alone draws
    assert not torch.equal(before, torch.get_rng_state())
    torch.manual_seed(0)
    model = resolved.build_model(task)
    torch.manual_seed(0)
    task.build_model(resolved.make_topology, "zeros", 0.1)
    built_alone = torch.get_rng_state()
    torch.manual_seed(0)
    resolved.build_model(task)
    assert torch.equal(torch.get_rng_state(), built_alone)  # the batch and the loss drew nothing
    assert model.training


def test_plugin_code_failing_during_training_or_evaluation_is_one_line_and_the_run_failed(tmp_path, monkeypatch):
    import json
    import types

    from seqpipe.builtin.classify import task as classify

    calls = []

    def cross_entropy_failing_later(*args, **kwargs):  # called from the task's own loss, in its module
        calls.append(1)
        if torch.is_grad_enabled() and len(calls) > 3:  # past the check's first batch and a few training steps
            raise ValueError("a batch this loss cannot take")
        return torch.nn.functional.cross_entropy(*args, **kwargs)

    monkeypatch.setattr(classify, "F", types.SimpleNamespace(cross_entropy=cross_entropy_failing_later))
    pipeline = _pipeline(tmp_path)
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    said = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert (
        len(said) == 1
        and (
            "task 'classify' from plugin 'seqpipe.builtin.classify.task' failed while training: ValueError: "
            "a batch this loss cannot take"
        )
        in said[0]
    )
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"
    calls.clear()
    debug = CliRunner().invoke(main, ["--debug", "run", str(pipeline), "--out", str(tmp_path / "run2")])
    assert debug.exit_code == 2 and "Traceback" in debug.output and "in cross_entropy_failing_later" in debug.output


def test_an_engine_error_outside_plugin_code_is_not_blamed_on_a_plugin(tmp_path, monkeypatch):
    from seqpipe import training

    def broken_checkpoint(*args, **kwargs):
        raise RuntimeError("the engine's own bug")

    monkeypatch.setattr(training, "save_checkpoint", broken_checkpoint)
    result = CliRunner().invoke(main, ["run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)  # a traceback: seqpipe's to fix


def test_a_topology_storing_a_submodule_under_a_contract_name_is_named_at_check(tmp_path, monkeypatch):
    from seqpipe.builtin.topologies import Stacked

    real = Stacked.__init__

    def storing_layers(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.layers = torch.nn.ModuleList()  # Topology.layers() would silently win over this

    monkeypatch.setattr(Stacked, "__init__", storing_layers)
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert (
        "topology 'single' from plugin 'seqpipe.builtin.topologies': Single stores a module as self.layers, but "
        "'layers' is a method of the Topology contract"
    ) in result.output


def test_a_topology_missing_a_declared_attribute_is_named_not_the_task(tmp_path, monkeypatch):
    from seqpipe.builtin.topologies import Stacked

    real = Stacked.__init__

    def forgetting_num_slots(self, *args, **kwargs):
        real(self, *args, **kwargs)
        del self.num_slots  # as a constructor that never set it

    monkeypatch.setattr(Stacked, "__init__", forgetting_num_slots)
    result = CliRunner().invoke(main, ["check", str(_pipeline(tmp_path))])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert (
        "topology 'single' from plugin 'seqpipe.builtin.topologies' failed while building the model: AttributeError:"
        in line
    )
    assert "is part of the Topology contract" in line and "num_slots" in line


def test_a_plugin_class_redefining_a_contract_attribute_as_a_method_is_refused_at_registration():
    from seqpipe.builtin.topologies import Stacked
    from seqpipe.errors import PluginError
    from seqpipe.registry import Registry

    class Residual(Stacked):
        def state_shapes(self):  # the contract's state_shapes is read as an attribute
            return {}

    registry = Registry()
    try:
        registry.add("topology", "residual", Residual, "my_plugin", "my-dist")
    except PluginError as exc:
        message = str(exc)
    else:
        raise AssertionError("registered")
    assert "plugin 'my_plugin' (distribution 'my-dist') registered topology 'residual'" in message
    assert "Residual.state_shapes is a method, but 'state_shapes' is an attribute of the Topology contract" in message
