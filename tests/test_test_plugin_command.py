"""`seqpipe test-plugin DIST`: the contract kit on one installed distribution's plugins, from the
command line; a broken plugin fails naming what broke, exit 1."""

from __future__ import annotations

from test_plugins import make_distribution, seqpipe_cli

NARROW_CELL_WITHOUT_STATE_SIZES = """
    import torch
    from torch import nn
    from seqpipe import hookimpl
    from seqpipe.contracts import Cell

    class NarrowCell(Cell):
        '''A projected cell (h narrower than c) that forgets to declare state_sizes.'''
        state_names = ("h", "c")

        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size)
            self.narrow = max(1, hidden_size - 2)
            self.memory = nn.Linear(input_size + self.narrow, hidden_size)
            self.project = nn.Linear(hidden_size, self.narrow, bias=False)

        def forward(self, x_t, state):
            h, c = state
            c = 0.5 * c + torch.tanh(self.memory(torch.cat([x_t, h], dim=1)))
            return (torch.tanh(self.project(c)), c)

    @hookimpl
    def register_cells(register):
        register("narrow", NarrowCell)
"""


def test_the_installed_cell_plugin_passes_in_every_topology():
    result = seqpipe_cli(["test-plugin", "seqpipe-indrnn", "--no-export"], [])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok      cell 'indrnn': check_cell")
    assert {line.split(": ")[0] for line in lines[1:4]} == {
        f"ok      cell 'indrnn' in topology '{t}'" for t in ("bidirectional", "single", "stacked")
    }
    assert lines[-1] == "seqpipe-indrnn: 4 of 4 checks passed."


def test_a_broken_plugin_fails_naming_what_broke(tmp_path):
    site = make_distribution(
        tmp_path,
        "seqpipe-narrow",
        {"seqpipe_narrow": NARROW_CELL_WITHOUT_STATE_SIZES},
        {"seqpipe": {"narrow": "seqpipe_narrow"}},
    )
    result = seqpipe_cli(["test-plugin", "seqpipe-narrow", "--no-export"], [site])
    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "FAILED  cell 'narrow': check_cell: AssertionError: NarrowCell.forward failed on states of its "
        "declared widths state_sizes = (5, 5) (not declared: every state is hidden_size = 5 wide by default"
    )
    assert result.stdout.splitlines()[-1] == "seqpipe-narrow: 0 of 4 checks passed."


def test_an_unknown_distribution_is_a_usage_error():
    result = seqpipe_cli(["test-plugin", "seqpipe-nothing"], [])
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert (
        "distribution 'seqpipe-nothing' registers no cell, topology, task or encoding; installed plugin distributions: "
        "seqpipe-indrnn" in result.stderr
    )
