"""The one family of errors a user can cause.

Every ``SeqpipeError`` is rendered by the CLI as a single line (no traceback) and exit code 2,
so its message must name the file, key, plugin or input at fault and say what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SeqpipeError(Exception):
    """A problem the user can fix; the message is shown as-is, on one line."""

    exit_code = 2


class ConfigError(SeqpipeError):
    """The pipeline file is malformed or names something that does not exist."""


class PluginError(SeqpipeError):
    """A plugin failed to load or registered something inconsistent."""


class DataError(SeqpipeError):
    """An input data file is missing, unreadable, or lacks a column or label."""


class ExportError(SeqpipeError):
    """A model cannot be exported the way the pipeline asks."""


class ParityError(SeqpipeError):
    """torch and onnxruntime disagree beyond the tolerance: the export must not be trusted."""

    exit_code = 1


class RunDirectoryError(SeqpipeError):
    """The output directory would overwrite something a user made, or is in use by another run."""


class DamagedFileError(SeqpipeError):
    """A file seqpipe wrote no longer matches what it wrote (damaged on disk, edited by hand): it is
    refused, never used."""

    exit_code = 1


class RunFault(SeqpipeError):
    """The machine failed the run (disk full, permission denied, a read-only folder): said in one line,
    the run directory marked failed."""

    exit_code = 1


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
