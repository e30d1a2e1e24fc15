"""Plugin discovery through real installed distributions (built and installed per test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqpipe.errors import PluginError
from seqpipe.plugins import BUILTIN_PLUGINS, make_plugin_manager
from seqpipe.registry import Registry, build_registry


def make_distribution(
    root: Path,
    dist: str,
    modules: dict[str, str],
    entry_points: dict[str, dict[str, str]],
    dependencies: tuple[str, ...] = (),
    version: str = "0.0.1",
) -> Path:
    """Write, build and install (``pip install --target``) a distribution of ``modules`` (name ->
    code) with ``entry_points`` (group -> {name: target}) and ``dependencies`` (recorded, not
    installed); return its site dir."""
    src = root / f"src-{dist}"
    src.mkdir(parents=True)
    for module, code in modules.items():
        (src / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    groups = "".join(
        f'\n[project.entry-points."{group}"]\n' + "".join(f'{name} = "{target}"\n' for name, target in eps.items())
        for group, eps in entry_points.items()
    )
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = {json.dumps(list(dependencies))}

        [tool.setuptools]
        py-modules = {json.dumps(sorted(modules))}
        """)
        + groups,
        encoding="utf-8",
    )
    site = root / f"site-{dist}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return site


PEEPHOLE_CELL = """
    import torch
    from torch import nn
    from seqpipe import hookimpl
    from seqpipe.contracts import Cell

    class ScaledTanhCell(Cell):
        '''h_t = tanh(W x_t + V h_{t-1}) * 0.9: a third-party cell with no fused path.'''
        state_names = ("h",)

        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size)
            self.wx = nn.Linear(input_size, hidden_size)
            self.wh = nn.Linear(hidden_size, hidden_size, bias=False)

        def forward(self, x_t, state):
            return (0.9 * torch.tanh(self.wx(x_t) + self.wh(state[0])),)

    @hookimpl
    def register_cells(register):
        register("scaledtanh", ScaledTanhCell)
"""


CLASHING_CELL = """
    from seqpipe import hookimpl
    from seqpipe.builtin.cells import GRUCell

    class OtherGRU(GRUCell):
        '''A real cell whose only fault is its name.'''

    @hookimpl
    def register_cells(register):
        register("gru", OtherGRU)
"""

NOT_A_CELL = """
    from seqpipe import hookimpl

    @hookimpl
    def register_cells(register):
        register("notacell", object)
"""


@pytest.fixture(scope="module")
def plugin_sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dists")
    return {
        "good": make_distribution(
            root,
            "seqpipe-scaledtanh",
            {"seqpipe_scaledtanh": PEEPHOLE_CELL},
            {"seqpipe": {"scaledtanh": "seqpipe_scaledtanh"}},
        ),
        "broken": make_distribution(
            root,
            "seqpipe-broken",
            {"seqpipe_broken": "raise ImportError('needs a library that is not installed')\n"},
            {"seqpipe": {"broken": "seqpipe_broken"}},
        ),
        "clash": make_distribution(
            root, "seqpipe-clash", {"seqpipe_clash": CLASHING_CELL}, {"seqpipe": {"clash": "seqpipe_clash"}}
        ),
        "wrong-kind": make_distribution(
            root,
            "seqpipe-wrongkind",
            {"seqpipe_wrongkind": NOT_A_CELL},
            {"seqpipe": {"wrongkind": "seqpipe_wrongkind"}},
        ),
    }


def seqpipe_cli(args: list[str], sites: list[Path], **env: str) -> subprocess.CompletedProcess:
    # the sites first, then any PYTHONPATH the tests run under, so the subprocess imports the same seqpipe
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [*map(str, sites), os.environ.get("PYTHONPATH")])),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "seqpipe", *args], capture_output=True, text=True, env=environ, timeout=600
    )


def test_builtins_are_listed_explicitly(registry: Registry):
    assert {"vanilla", "gru", "lstm"} <= set(registry.names("cell"))
    assert {"single", "stacked"} <= set(registry.names("topology"))
    assert "classify" in registry.names("task")
    assert registry.get("cell", "gru", "x").plugin == "seqpipe.builtin.cells"
    assert all(name.startswith("seqpipe.builtin.") for name in BUILTIN_PLUGINS)


def test_each_manager_is_fresh():
    pm1, _ = make_plugin_manager(strict=False, warn=lambda line: None)
    pm2, _ = make_plugin_manager(strict=False, warn=lambda line: None)
    assert pm1 is not pm2
    pm1.unregister(name="seqpipe.builtin.cells")
    assert "gru" in build_registry(pm2).names("cell")


def test_installed_cell_appears_and_trains_exports_and_passes_parity(plugin_sites, tmp_path, small_csv, write_pipeline):
    listed = seqpipe_cli(["plugins", "--json"], [plugin_sites["good"]])
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["registered"]["cell"]["scaledtanh"] == "scaledtanh"
    assert data["plugins"]["scaledtanh"] == "seqpipe-scaledtanh"
    pipeline = write_pipeline(
        tmp_path / "p.toml",
        small_csv,
        cell="scaledtanh",
        topology="stacked",
        topology_options="topology_options = {num_layers = 2}",
    )
    run = seqpipe_cli(["run", str(pipeline), "--out", str(tmp_path / "run")], [plugin_sites["good"]])
    assert run.returncode == 0, run.stderr
    parity = json.loads((tmp_path / "run" / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5


def test_broken_plugin_is_named_and_skipped(plugin_sites):
    result = seqpipe_cli(["plugins"], [plugin_sites["broken"], plugin_sites["good"]])
    assert result.returncode == 0, result.stderr
    assert "plugin 'broken'" in result.stderr and "'seqpipe-broken'" in result.stderr
    assert "needs a library that is not installed" in result.stderr
    assert "Traceback" not in result.stderr
    assert "scaledtanh" in result.stdout and "gru" in result.stdout


def test_strict_mode_reraises(plugin_sites):
    for args, env in ((["plugins", "--strict-plugins"], {}), (["plugins"], {"SEQPIPE_STRICT_PLUGINS": "1"})):
        result = seqpipe_cli(args, [plugin_sites["broken"]], **env)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "seqpipe-broken" in result.stderr


def test_block_list_skips_a_plugin(plugin_sites):
    result = seqpipe_cli(["plugins", "--strict-plugins"], [plugin_sites["broken"]], SEQPIPE_BLOCK_PLUGINS="broken")
    assert result.returncode == 0 and result.stderr == ""


def test_name_clash_is_refused_naming_both(plugin_sites, tmp_path):
    listed = seqpipe_cli(["plugins"], [plugin_sites["clash"]])
    assert "clash: cell 'gru' registered by seqpipe.builtin.cells, clash" in listed.stdout
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[data]\ndataset = "spam-assassin"\n[model]\ncell = "gru"\n')
    checked = seqpipe_cli(["check", str(pipeline)], [plugin_sites["clash"]])
    assert checked.returncode == 2
    assert "'seqpipe.builtin.cells' and 'clash'" in checked.stderr


def test_strict_in_process_raises_plugin_error(plugin_sites, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_sites["broken"]))
    with pytest.raises(PluginError, match="seqpipe-broken"):
        make_plugin_manager(strict=True)
    lines: list[str] = []
    pm, report = make_plugin_manager(strict=False, warn=lines.append)
    assert len(lines) == 1 and report.failed == lines
    assert "gru" in build_registry(pm).names("cell")


def test_wrong_kind_is_refused_naming_the_plugin(plugin_sites):
    result = seqpipe_cli(["plugins"], [plugin_sites["wrong-kind"]])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "plugin 'wrongkind' (distribution 'seqpipe-wrongkind') registered cell 'notacell'" in result.stderr
    assert "seqpipe.contracts.Cell" in result.stderr and "SEQPIPE_BLOCK_PLUGINS=wrongkind" in result.stderr


class _NotAPredictor:
    def predict(self, path, inputs, options):
        return []


def _json_option_predictor():
    from seqpipe.predictor import Option, Predictor

    class JsonOptionPredictor(Predictor):
        options = (Option("json", bool, False),)  # `seqpipe predict` owns --json

        def predict(self, path, inputs, options):
            return []

    return JsonOptionPredictor


@pytest.mark.parametrize(
    "hook,obj,expected",
    [
        ("register_cells", object, "seqpipe.contracts.Cell"),
        ("register_topologies", int, "seqpipe.contracts.Topology"),
        ("register_tasks", "classify", "seqpipe.contracts.Task"),
        ("register_datasets", "data.csv", "seqpipe.registry.Dataset"),
        ("register_predictors", _NotAPredictor, "seqpipe.predictor.Predictor"),
        ("register_predictors", _json_option_predictor(), "option 'json'"),
    ],
)
def test_every_kind_refuses_the_wrong_object(hook, obj, expected):
    import types

    from seqpipe import hookimpl

    plugin = types.ModuleType("seqpipe_wrong")
    setattr(plugin, hook, hookimpl(lambda register: register("thing", obj)))
    pm, _ = make_plugin_manager(strict=False, warn=lambda line: None)
    pm.register(plugin, name="wrong")
    with pytest.raises(PluginError, match="plugin 'wrong' \\(distribution 'seqpipe-wrong'\\)") as refused:
        build_registry(pm, {"wrong": "seqpipe-wrong"})
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_serving_registry_holds_the_builtin_predictors_and_no_torch_kinds():
    from seqpipe.plugins import SERVING, load_registry

    registry, report = load_registry(strict=False, warn=lambda line: None, source=SERVING)
    assert set(registry.names("predictor")) >= {"classify", "tag", "forecast", "generate", "seq2seq"}
    assert registry.get("predictor", "forecast", "x").distribution == "seqpipe"
    assert registry.names("cell") == registry.names("task") == []
    assert "seqpipe.builtin.classify" not in report.loaded
