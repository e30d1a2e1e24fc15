"""Run directories: one new directory per run; nothing a user made is overwritten."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from seqpipe.errors import RunDirectoryError


def make_run_dir(out: str | Path | None, pipeline: Path, force: bool) -> Path:
    """Create the run directory. ``--out DIR`` must be new or empty unless ``force``.

    Without ``--out`` the directory is ``runs/<pipeline>-<timestamp>`` (a suffix keeps it new).
    """
    if out is not None:
        path = check_out_dir(out, force)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path("runs") / f"{pipeline.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def check_out_dir(out: str | Path, force: bool) -> Path:
    """``--out DIR`` as a path, if a run may write there: new, empty, or ``force``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {path}: is a file, not a directory; choose another path.")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise RunDirectoryError(f"--out {path}: directory exists and is not empty; choose a new directory, or pass --force to write into it.")
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
