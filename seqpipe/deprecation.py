"""Names that moved, still importable from where they were, with a warning.

A plugin written against an earlier release keeps working for at least one minor version after a
name moves: the old module answers the old name with the object from its new home and a
``DeprecationWarning`` saying where to import it from and in which release the old name goes.
Modules that no longer exist are listed in :data:`MOVED_MODULES` and answered by a finder that
``seqpipe/__init__.py`` installs, so no file is kept for them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any


class MovedNameWarning(DeprecationWarning):
    """A name imported from where it was: says where it went and when the old name goes."""


def say_moved_names() -> None:
    """Show each moved-name warning once per place in the importing code, as one line on stderr.
    For the command line: Python shows a ``DeprecationWarning`` only when ``__main__`` triggers it,
    and a plugin's module never is."""
    warnings.filterwarnings("default", category=MovedNameWarning)
    show = warnings.showwarning

    def one_line(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if issubclass(category, MovedNameWarning):
            print(f"seqpipe: {filename}:{lineno}: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


def moved_names(old_module: str, moved: dict[str, str], removed_in: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module``: ``moved`` maps each old name to the module that
    now holds it (same name there)."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new_module = moved[name]
        return _moved(old_module, name, new_module, getattr(importlib.import_module(new_module), name), removed_in)

    return __getattr__


def moved_module(old_module: str, new_modules: tuple[str, ...], removed_in: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a module whose names went to several (a module that became a
    package, or one that is gone): any public name is looked up in
    ``new_modules`` in turn (imported only then, so the package itself stays cheap to import)."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("_"):
            modules = [importlib.import_module(m) for m in new_modules]
            held = [m for m in modules if name in vars(m)]  # vars, not hasattr: no other module's moved names
            defined = [m for m in held if getattr(vars(m)[name], "__module__", None) == m.__name__]
            for module in defined[:1] or held[:1]:  # where it is defined, else the first that imports it
                return _moved(old_module, name, module.__name__, vars(module)[name], removed_in)
        raise AttributeError(f"module {old_module!r} has no attribute {name!r}")

    return __getattr__


def _moved(old_module: str, name: str, new_module: str, value: Any, removed_in: str) -> Any:
    """The warning every moved name gives, pointed at the line that imported it (the caller of the
    module ``__getattr__`` that calls this), and ``value``."""
    warnings.warn(
        f"{old_module}.{name} moved to {new_module}.{name}: import it from there "
        f"(the old name goes in seqpipe {removed_in}).",
        MovedNameWarning,
        stacklevel=3,
    )
    return _kept(old_module, name, value)


def _kept(old_module: str, name: str, value: Any) -> Any:
    """``value``, also set on ``old_module`` when that is a package, so one ``from package import
    name`` warns once (it looks the name up twice); a module's old names warn at every import."""
    module = sys.modules[old_module]
    if hasattr(module, "__path__"):
        setattr(module, name, value)
    return value


# module that is gone -> (the modules its names now live in, searched in order; the release that drops it)
MOVED_MODULES: dict[str, tuple[tuple[str, ...], str]] = {
    # 0.1: the ONNX layer became seqpipe.onnx, serving seqpipe.serving
    "seqpipe.export": (("seqpipe.onnx.export", "seqpipe.onnx.spec", "seqpipe.onnx.torch_export"), "0.3"),
    "seqpipe.graphs": (("seqpipe.exports",), "0.3"),
    "seqpipe.loop_graph": (("seqpipe.onnx.loop",), "0.3"),
    "seqpipe.parity": (("seqpipe.onnx.parity",), "0.3"),
    "seqpipe.precision": (("seqpipe.onnx.precision",), "0.3"),
    "seqpipe.builtin.native_onnx": (("seqpipe.onnx.native",), "0.3"),
    "seqpipe.decoding": (("seqpipe.serving.decoding",), "0.3"),
    "seqpipe.runtime": (("seqpipe.serving.runtime",), "0.3"),
    "seqpipe.serving.predictor": (("seqpipe.predictor",), "0.3"),
    "seqpipe.predict": (
        (
            "seqpipe.serving.predict",
            "seqpipe.predictor",
            "seqpipe.builtin.classify.serve",
            "seqpipe.builtin.tag.serve",
            "seqpipe.builtin.forecast.serve",
            "seqpipe.builtin.generate.serve",
            "seqpipe.builtin.seq2seq.serve",
        ),
        "0.3",
    ),
    # 0.2: each built-in task's predictor moved into the task's package
    "seqpipe.builtin.predictors": (
        (
            "seqpipe.serving.decoding",
            "seqpipe.builtin.classify.serve",
            "seqpipe.builtin.tag.serve",
            "seqpipe.builtin.forecast.serve",
            "seqpipe.builtin.generate.serve",
            "seqpipe.builtin.seq2seq.serve",
        ),
        "0.3",
    ),
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module of :data:`MOVED_MODULES` as an empty module whose names resolve, each with a
    warning, from the modules that now hold them."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"{spec.name} is gone: its names moved (see the changelog).")
        new_modules, removed_in = MOVED_MODULES[spec.name]
        module.__getattr__ = moved_module(spec.name, new_modules, removed_in)  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install_moved_module_finder() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())  # last: a real module of the same name always wins
