"""``seqpipe test-plugin DIST``: the contract kit and the parity matrix rows of one installed
distribution's plugins, without writing a test file.

Each cell is checked alone and inside every registered topology; each topology with the kit's
cell (states of different widths) and with every registered cell; each task trained, evaluated and
exported on its example pipeline; each input encoding through ``check_encoding``. With ONNX export
(the default) every check also runs the graphs the engine would write in onnxruntime against torch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from seqpipe.errors import ConfigError
from seqpipe.registry import Entry, Registry

KINDS = ("cell", "topology", "task", "encoding")


@dataclass(frozen=True)
class Check:
    """One check to run: what it says while running, and the call."""

    what: str
    run: Callable[[], Any]


def plugin_checks(registry: Registry, distribution: str, *, export: bool = True) -> list[Check]:
    """Every check for the plugins ``distribution`` registers (a ConfigError naming the installed
    distributions when it registers none)."""
    from seqpipe import kit

    mine = [
        e
        for kind in KINDS
        for e in (registry.entries[kind][n] for n in registry.names(kind))
        if e.distribution == distribution
    ]
    if not mine:
        known = sorted(
            {
                e.distribution
                for kind in KINDS
                for e in registry.entries[kind].values()
                if e.distribution not in (None, "seqpipe")
            }
        )
        raise ConfigError(
            f"distribution '{distribution}' registers no cell, topology, task or encoding"
            + (f"; installed plugin distributions: {', '.join(known)}" if known else "; none is installed")
            + " (see `seqpipe plugins`)."
        )
    checks: list[Check] = []
    for entry in mine:
        checks.extend(_checks_of(entry, registry, kit, export))
    return checks


def _checks_of(entry: Entry, registry: Registry, kit: Any, export: bool) -> Iterator[Check]:
    label = f"{entry.kind} '{entry.name}'"
    if entry.kind == "cell":
        yield Check(f"{label}: check_cell", lambda: kit.check_cell(entry.obj, export=export))
        for name in registry.names("topology"):
            topology = registry.entries["topology"][name].obj
            yield Check(
                f"{label} in topology '{name}': check_topology",
                functools.partial(kit.check_topology, topology, entry.obj, export=export),
            )
    elif entry.kind == "topology":
        yield Check(
            f"{label} with the kit's cell: check_topology", lambda: kit.check_topology(entry.obj, export=export)
        )
        for name in registry.names("cell"):
            cell = registry.entries["cell"][name].obj
            yield Check(
                f"{label} with cell '{name}': check_topology",
                functools.partial(kit.check_topology, entry.obj, cell, export=export),
            )
    elif entry.kind == "task":
        yield Check(
            f"{label}: check_task (its example pipeline, trained and exported)",
            lambda: kit.check_task(entry.obj, registry=registry),
        )
    else:
        yield Check(f"{label}: check_encoding", lambda: kit.check_encoding(entry.obj))


def run_checks(checks: list[Check], say: Callable[[str], None]) -> int:
    """Run each check, one line each (ok or FAILED with the first line of what broke); the number that failed."""
    failed = 0
    for check in checks:
        started = time.perf_counter()
        try:
            check.run()
        except Exception as exc:  # an AssertionError from the kit, or anything the plugin's own code raised
            failed += 1
            first = (str(exc).strip().splitlines() or [""])[0]
            say(f"FAILED  {check.what}: {type(exc).__name__}: {first}")
            continue
        say(f"ok      {check.what} ({time.perf_counter() - started:.1f} s)")
    return failed
