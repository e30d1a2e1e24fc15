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


def make_distribution(root: Path, dist: str, module: str, entry_points: dict[str, str], code: str) -> Path:
    """Write, build and install (``pip install --target``) a distribution; return its site dir."""
    src = root / f"src-{dist}"
    src.mkdir(parents=True)
    (src / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    eps = "\n".join(f'{name} = "{target}"' for name, target in entry_points.items())
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [tool.setuptools]
        py-modules = ["{module}"]

        [project.entry-points.seqpipe]
        """) + eps + "\n", encoding="utf-8")
    site = root / f"site-{dist}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True)
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


@pytest.fixture(scope="module")
def plugin_sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dists")
    return {
        "good": make_distribution(root, "seqpipe-scaledtanh", "seqpipe_scaledtanh", {"scaledtanh": "seqpipe_scaledtanh"}, PEEPHOLE_CELL),
        "broken": make_distribution(root, "seqpipe-broken", "seqpipe_broken", {"broken": "seqpipe_broken"},
                                    "raise ImportError('needs a library that is not installed')\n"),
        "clash": make_distribution(root, "seqpipe-clash", "seqpipe_clash", {"clash": "seqpipe_clash"}, """
            from seqpipe import hookimpl
            @hookimpl
            def register_cells(register):
                register("gru", object)
        """),
    }


def seqpipe_cli(args: list[str], sites: list[Path], **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sites)), **env}
    return subprocess.run([sys.executable, "-m", "seqpipe", *args], capture_output=True, text=True, env=environ, timeout=600)


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
    pipeline = write_pipeline(tmp_path / "p.toml", small_csv, cell="scaledtanh", topology="stacked",
                              topology_options="topology_options = {num_layers = 2}")
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
