"""Names of cells, topologies, tasks and datasets, and the plugin that provides each.

Plugins register through the ``register`` callback their hook receives. Each hook implementation
is called on its own, so the registry knows which plugin provided which name; a name that two
plugins register is recorded as a clash and refused when used, naming both, instead of letting
pluggy's call order pick a winner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from seqpipe.errors import ConfigError, PluginError, did_you_mean

KINDS = ("cell", "topology", "task", "dataset")

Register = Callable[..., None]


@dataclass(frozen=True)
class Entry:
    """One registered thing: its kind, name, implementation and the plugin that registered it."""

    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str = "unknown"


@dataclass(frozen=True)
class Dataset:
    """A dataset shipped inside a package: a file and the format its task expects."""

    path: Path
    format: str
    description: str = ""


@dataclass
class Registry:
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, obj: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"seqpipe: plugin '{plugin}' registered a {kind} with an invalid name {name!r}; names are non-empty strings.")
        existing = self.entries[kind].get(name)
        if existing is not None and existing.plugin != plugin:
            self.clashes.setdefault((kind, name), [existing.plugin]).append(plugin)
            return
        self.entries[kind][name] = Entry(kind, name, obj, plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str, where: str) -> Entry:
        """Look ``name`` up; ``where`` names the file and key for the error message."""
        if (kind, name) in self.clashes:
            plugins = " and ".join(f"'{p}'" for p in self.clashes[(kind, name)])
            raise PluginError(
                f"{where}: {kind} '{name}' is registered by both {plugins}; uninstall or block one "
                "of them (SEQPIPE_BLOCK_PLUGINS=name)."
            )
        try:
            return self.entries[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise ConfigError(
                f"{where}: unknown {kind} '{name}'{did_you_mean(name, self.names(kind))}; "
                f"known: {known} (see `seqpipe plugins`)."
            ) from None


def _hook_kind(hook_name: str) -> str:
    return {"register_cells": "cell", "register_topologies": "topology", "register_tasks": "task", "register_datasets": "dataset"}[hook_name]


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook implementation, one plugin at a time."""
    registry = Registry()
    for hook_name in ("register_cells", "register_topologies", "register_tasks", "register_datasets"):
        kind = _hook_kind(hook_name)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name

            def register(name: str, obj: Any, *, _kind: str = kind, _plugin: str = plugin) -> None:
                registry.add(_kind, name, obj, _plugin)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"seqpipe: plugin '{plugin}' failed in {hook_name}: {type(exc).__name__}: {exc}; "
                    f"fix or block it (SEQPIPE_BLOCK_PLUGINS={plugin})."
                ) from exc
    return registry
