"""The predictor contract: how a task serves predictions from its exported ONNX files, torch-free.

A task's serving plugin registers one :class:`Predictor` subclass under the task's name (hook
``register_predictors``, entry-point group ``seqpipe.serving``). ``seqpipe predict`` reads the
task from the file's ``seqpipe.spec``, finds its predictor, parses the predictor's own
:class:`Option` s from the command line and calls :meth:`Predictor.predict`.
"""

from __future__ import annotations

import keyword
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from seqpipe.errors import SeqpipeError, did_you_mean

# options every prediction takes, parsed by `seqpipe predict` itself; a task cannot redeclare them
COMMON_OPTIONS = ("device", "precision", "json", "strict_plugins", "help")
OPTION_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class Option:
    """One option a predictor takes: ``name`` is a Python identifier, ``--name-with-dashes`` on the
    command line; ``bool`` options are flags."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class PredictOptions:
    """What every prediction receives: where to run, and the task's own option values by name
    (every declared option present, defaults filled in)."""

    device: str = "auto"
    precision: str = "fp32"
    task: Mapping[str, Any] = field(default_factory=dict)


class Predictor(ABC):
    """Serves one task. Subclasses declare ``options`` and ``usage`` and implement :meth:`predict`;
    their module must not import torch (serving runs where torch is not installed)."""

    options: ClassVar[tuple[Option, ...]] = ()
    # example arguments after MODEL, shown by `seqpipe predict --help`, e.g. '"text one" "text two"'
    usage: ClassVar[str] = "INPUTS..."
    # False for a task whose arguments are not a list of inputs, one result each (a forecast's one
    # series file, generation's none): `seqpipe predict --file` is refused for it
    takes_inputs: ClassVar[bool] = True

    @abstractmethod
    def predict(self, path: Path, inputs: list[str], options: PredictOptions) -> list[dict[str, Any]]:
        """Predict with the export at ``path`` (a run directory or .onnx file) on ``inputs``: one
        JSON-able dict per result, each with a ``line`` for people (the CLI prints it, or the rest
        as JSON)."""

    @classmethod
    def declaration_problem(cls) -> str | None:
        """What is wrong with the declared options, or None: checked when the predictor registers."""
        if not isinstance(cls.usage, str):
            return f"usage must be a string (found {type(cls.usage).__name__})"
        names: set[str] = set()
        for option in cls.options:
            if not isinstance(option, Option):
                return f"options must be seqpipe.predictor.Option objects (found {type(option).__name__})"
            if not option.name.isidentifier() or keyword.iskeyword(option.name):
                return f"option name {option.name!r} is not a Python identifier"
            if option.name in COMMON_OPTIONS or option.name in names:
                owned = ", ".join(COMMON_OPTIONS)
                return f"option '{option.name}' is declared twice or is one `seqpipe predict` owns ({owned})"
            if option.type not in OPTION_TYPES:
                return f"option '{option.name}' has type {option.type!r}; use one of str, int, float, bool"
            names.add(option.name)
        return None

    @classmethod
    def resolve_options(cls, task: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with every declared option's default filled in; an undeclared one is refused."""
        declared = {option.name: option for option in cls.options}
        for name in values:
            if name not in declared:
                raise SeqpipeError(
                    f"task '{task}' takes no option '{name}'{did_you_mean(name, declared)}; "
                    f"it takes: {cls.describe_options()}."
                )
        return {name: values.get(name, option.default) for name, option in declared.items()}

    @classmethod
    def describe_options(cls) -> str:
        """The declared options as command-line flags, for one-line errors."""
        return ", ".join(option.flag for option in cls.options) or "none"
