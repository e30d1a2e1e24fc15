"""Names of cells, topologies, tasks, encodings, datasets and predictors, and the plugin that provides each.

Plugins register through the ``register`` callback their hook receives. Each hook implementation
is called on its own, so the registry knows which plugin provided which name; a name that two
plugins register is recorded as a clash and refused when used, naming both, instead of letting
pluggy's call order pick a winner. An object of the wrong kind (a cell that is not a
:class:`seqpipe.contracts.Cell` subclass, ...) is refused when it registers, naming the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pluggy

from seqpipe.errors import ConfigError, PluginError, did_you_mean
from seqpipe.reserved import class_clash

KINDS = ("cell", "topology", "task", "encoding", "dataset", "predictor")
HOOK_KINDS = {
    "register_cells": "cell",
    "register_topologies": "topology",
    "register_tasks": "task",
    "register_encodings": "encoding",
    "register_datasets": "dataset",
    "register_predictors": "predictor",
}


class Register(Protocol):
    """The callback a registration hook receives: ``register("name", obj)``."""

    def __call__(self, name: str, obj: Any, /) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One registered thing: its kind, name, implementation, and the plugin (and distribution) that registered it."""

    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A dataset shipped inside a package: a file and the format its task expects; with ``test``
    (and ``validation``) files, ``path`` is the training file and the published splits are used."""

    path: Path
    format: str
    description: str = ""
    validation: Path | None = None
    test: Path | None = None


def plugin_label(plugin: str, distribution: str | None) -> str:
    return f"'{plugin}'" + (f" (distribution '{distribution}')" if distribution and distribution != "seqpipe" else "")


def kind_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot be registered as a ``kind``, or None. seqpipe.contracts (torch) is imported
    only to check torch kinds, so a serving registry, which holds predictors and encodings, stays torch-free."""
    if kind == "dataset":
        return None if isinstance(obj, Dataset) else f"a seqpipe.registry.Dataset, not {obj!r}"
    base: type
    if kind == "predictor":
        from seqpipe.predictor import Predictor

        base = Predictor
    elif kind == "encoding":
        from seqpipe.inputs import InputEncoding  # torch-free: a serving registry holds encodings too

        base = InputEncoding
    else:
        from seqpipe import contracts

        base = {"cell": contracts.Cell, "topology": contracts.Topology, "task": contracts.Task}[kind]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        return f"a subclass of {base.__module__}.{base.__qualname__}, not {obj!r}"
    if kind == "predictor":
        problem = obj.declaration_problem()
        if problem is not None:
            return f"a valid predictor: {problem}"
    clash = class_clash(obj, base)
    return None if clash is None else f"free of clashes with its contract's names: {clash}"


@dataclass
class Registry:
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, obj: Any, plugin: str, distribution: str | None = None) -> None:
        who = plugin_label(plugin, distribution)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"seqpipe: plugin {who} registered a {kind} with an invalid name {name!r}; names are non-empty strings."
            )
        problem = kind_problem(kind, obj)
        if problem is not None:
            raise PluginError(
                f"seqpipe: plugin {who} registered {kind} '{name}' as {obj!r}; a {kind} must be {problem}. "
                f"Fix the plugin or block it (SEQPIPE_BLOCK_PLUGINS={plugin})."
            )
        existing = self.entries[kind].get(name)
        if existing is not None and existing.plugin != plugin:
            self.clashes.setdefault((kind, name), [existing.plugin]).append(plugin)
            return
        self.entries[kind][name] = Entry(kind, name, obj, plugin, distribution)

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


def build_registry(pm: pluggy.PluginManager, distributions: Mapping[str, str] | None = None) -> Registry:
    """Call every registration hook implementation, one plugin at a time. ``distributions`` maps
    plugin name to the distribution that installed it (:class:`seqpipe.plugins.LoadReport.loaded`),
    for error messages."""
    distributions = distributions or {}
    registry = Registry()
    for hook_name, kind in HOOK_KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            distribution = distributions.get(plugin)

            def register(
                name: str, obj: Any, /, *, _kind: str = kind, _plugin: str = plugin, _dist: str | None = distribution
            ) -> None:
                registry.add(_kind, name, obj, _plugin, _dist)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"seqpipe: plugin {plugin_label(plugin, distribution)} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}; "
                    f"fix or block it (SEQPIPE_BLOCK_PLUGINS={plugin})."
                ) from exc
    return registry
