"""Build a plugin manager: built-in plugins first, then an entry-point group.

Two sources exist. Training (``seqpipe run``, ``check``, ``plugins``) loads :data:`BUILTIN_PLUGINS`
and the ``seqpipe`` group, whose modules may import torch. Serving (``seqpipe predict``) loads
:data:`SERVING_BUILTIN_PLUGINS` and the ``seqpipe.serving`` group, whose modules register
predictors (and the encodings they rebuild) and must not import torch, so that serving runs where torch is not
installed.

Entry points are loaded in our own loop rather than through pluggy's
``load_setuptools_entrypoints``, so that one broken plugin is reported (with its distribution and
entry point) and skipped instead of taking the whole CLI down, and so that two entry points with
the same name are both seen rather than one silently dropped.

Environment escape hatches:

- ``SEQPIPE_STRICT_PLUGINS=1``: a plugin that fails to load is an error, not a warning.
- ``SEQPIPE_DISABLE_PLUGIN_AUTOLOAD=1``: load built-ins only.
- ``SEQPIPE_BLOCK_PLUGINS=a,b``: skip the named entry points (of either group).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from seqpipe import hookspecs
from seqpipe.errors import PluginError
from seqpipe.registry import Registry, build_registry

ENTRY_POINT_GROUP = "seqpipe"
SERVING_ENTRY_POINT_GROUP = "seqpipe.serving"

# Built-ins are ordinary plugins, listed explicitly: nothing is discovered by scanning folders.
BUILTIN_PLUGINS = (
    "seqpipe.builtin.cells",
    "seqpipe.builtin.topologies",
    "seqpipe.builtin.classify.task",
    "seqpipe.builtin.forecast.task",
    "seqpipe.builtin.tag.task",
    "seqpipe.builtin.generate.task",
    "seqpipe.builtin.seq2seq.task",
    "seqpipe.builtin.encodings",
    "seqpipe.builtin.datasets",
)

# The built-in tasks' predictors (each task package's serve.py) and the encodings they rebuild from metadata:
# torch-free, unlike the task modules above.
SERVING_BUILTIN_PLUGINS = (
    "seqpipe.builtin.classify.serve",
    "seqpipe.builtin.forecast.serve",
    "seqpipe.builtin.tag.serve",
    "seqpipe.builtin.generate.serve",
    "seqpipe.builtin.seq2seq.serve",
    "seqpipe.builtin.encodings",
)


@dataclass(frozen=True)
class PluginSource:
    """Where one plugin manager's plugins come from: built-in modules, then an entry-point group."""

    builtins: tuple[str, ...]
    group: str


TRAINING = PluginSource(BUILTIN_PLUGINS, ENTRY_POINT_GROUP)
SERVING = PluginSource(SERVING_BUILTIN_PLUGINS, SERVING_ENTRY_POINT_GROUP)


@dataclass
class LoadReport:
    """What happened while loading plugins, for ``seqpipe plugins`` and for warnings."""

    loaded: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    failed: list[str] = field(default_factory=list)  # one line per failure


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def make_plugin_manager(
    strict: bool | None = None, *, warn=None, source: PluginSource = TRAINING
) -> tuple[pluggy.PluginManager, LoadReport]:
    """Return a fresh plugin manager with ``source``'s built-ins and installed plugins registered.

    ``strict`` re-raises plugin load failures (default: ``SEQPIPE_STRICT_PLUGINS``). ``warn`` is
    called with one line per skipped plugin (default: print to stderr).
    """
    if strict is None:
        strict = _env_flag("SEQPIPE_STRICT_PLUGINS")
    if warn is None:
        warn = lambda line: print(line, file=sys.stderr)  # noqa: E731
    pm = pluggy.PluginManager("seqpipe")
    pm.add_hookspecs(hookspecs)
    report = LoadReport()
    for module_name in source.builtins:
        pm.register(importlib.import_module(module_name), name=module_name)
        report.loaded[module_name] = "seqpipe"
    if not _env_flag("SEQPIPE_DISABLE_PLUGIN_AUTOLOAD"):
        _load_entry_points(pm, report, source.group, strict, warn)
    pm.check_pending()
    return pm, report


def load_registry(
    strict: bool | None = None, *, warn=None, source: PluginSource = TRAINING
) -> tuple[Registry, LoadReport]:
    """A fresh registry of ``source``'s plugins, each entry knowing its distribution."""
    pm, report = make_plugin_manager(strict, warn=warn, source=source)
    return build_registry(pm, report.loaded), report


def _load_entry_points(pm: pluggy.PluginManager, report: LoadReport, group: str, strict: bool, warn) -> None:
    blocked = {n.strip() for n in os.environ.get("SEQPIPE_BLOCK_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        if ep.name in blocked:
            continue
        if ep.name in report.loaded:
            message = (
                f"seqpipe: plugin entry point '{ep.name}' of distribution '{dist}' has the same name as "
                f"one from '{report.loaded[ep.name]}'; skipped. Uninstall one of them, or block it with "
                f"SEQPIPE_BLOCK_PLUGINS={ep.name}."
            )
            if strict:
                raise PluginError(message)
            report.failed.append(message)
            warn(message)
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # any failure inside third-party code must not kill the CLI
            message = (
                f"seqpipe: plugin '{ep.name}' ({ep.value}) from distribution '{dist}' failed to load: "
                f"{type(exc).__name__}: {exc}; skipped. Fix or uninstall '{dist}', or block it with "
                f"SEQPIPE_BLOCK_PLUGINS={ep.name}."
            )
            if strict:
                raise PluginError(message) from exc
            report.failed.append(message)
            warn(message)
            continue
        report.loaded[ep.name] = dist


@dataclass(frozen=True)
class DistributionInfo:
    """A plugin distribution's version and what it says it needs of seqpipe."""

    name: str
    version: str
    requires_seqpipe: str | None  # its requirement's specifier, e.g. ">=0.1,<0.2"; None when it states none

    @property
    def compatible(self) -> bool:
        """Whether this seqpipe's version is one the distribution was built for (by its own requirement)."""
        from packaging.specifiers import SpecifierSet

        from seqpipe import __version__

        return self.requires_seqpipe is None or SpecifierSet(self.requires_seqpipe).contains(
            __version__, prereleases=True
        )

    def incompatibility(self) -> str | None:
        """One line saying the distribution was built for another seqpipe, or None."""
        from seqpipe import __version__

        if self.compatible:
            return None
        return (
            f"{self.name} {self.version} requires seqpipe{self.requires_seqpipe}, and this is seqpipe {__version__}: "
            "its plugins may use names that moved or changed (the changelog's 'For plugin authors' says which); "
            f"upgrade {self.name}, or install a seqpipe it supports."
        )


def distribution_info(name: str) -> DistributionInfo | None:
    """The installed distribution ``name``'s version and requirement on seqpipe (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        found = distribution(name)
    except PackageNotFoundError:
        return None
    specifier = None
    for line in found.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == "seqpipe" and (
            requirement.marker is None or requirement.marker.evaluate()
        ):
            specifier = str(requirement.specifier) or None
    return DistributionInfo(found.metadata["Name"] or name, found.version, specifier)
