"""Run directories: one new directory per run; nothing a user made is overwritten."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from seqpipe import manifest
from seqpipe.errors import RunDirectoryError, RunFault

LOCK_FILE = ".lock"
# what the machine can refuse a run: said in one line (RunFault), never a traceback
MACHINE_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the folder is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large",
}


def make_run_dir(out: str | Path | None, pipeline: Path, force: bool) -> Path:
    """Create the run directory. ``--out DIR`` must be new or empty unless ``force``.

    Without ``--out`` the directory is ``runs/<pipeline>-<timestamp>`` (a suffix keeps it new).
    """
    try:
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
    except OSError as exc:
        where = f"--out {out}" if out is not None else f"{exc.filename or 'runs'}"
        raise RunDirectoryError(
            f"{where}: cannot create the run directory ({exc.strerror}); choose a folder you can write to with --out."
        ) from None


@contextlib.contextmanager
def locked(run_dir: Path, opening: str = "--out") -> Iterator[None]:
    """Hold ``run_dir`` for this process: a second run (or ``--resume``) there is refused in one line
    naming the process that holds it. An advisory lock (``flock``) on ``.lock``: the system releases
    it when the process ends however it ends, so a killed run never leaves the directory locked."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock in the standard library; the directory is not locked
        yield
        return
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirectoryError(
            f"{opening} {run_dir}: cannot write there ({exc.strerror}); choose a folder you can write to."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "unknown"
            raise RunDirectoryError(
                f"{opening} {run_dir}: in use by another seqpipe run ({holder}); wait for it to end or stop it, "
                "then try again."
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"process {os.getpid()} on {socket.gethostname()}, "
            f"since {datetime.now().isoformat(timespec='seconds')}".encode(),
        )
        yield
    finally:
        os.close(fd)


def machine_fault(exc: OSError, run_dir: Path) -> RunFault | None:
    """The one line for an ``OSError`` the machine caused while a run wrote ``run_dir`` (None for
    any other error: a bug, shown as such)."""
    if exc.errno not in MACHINE_FAULTS:
        return None
    where = Path(exc.filename) if exc.filename else run_dir
    if where.name.startswith(
        "."
    ):  # a temporary file (renamed into place once whole): its folder is what the user knows
        where = where.parent
    return RunFault(
        f"{where}: {MACHINE_FAULTS[exc.errno]} ({exc.strerror}); the run stopped and {run_dir} "
        f"is marked failed; make room or fix the permissions, then continue it: seqpipe run --resume {run_dir} "
        "(or start again)."
    )


def check_out_dir(out: str | Path, force: bool) -> Path:
    """``--out DIR`` as a path, if a run may write there: new, empty, or ``force``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {path}: is a file, not a directory; choose another path.")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise RunDirectoryError(
            f"--out {path}: directory exists and is not empty; choose a new directory, or pass --force to write into "
            "it."
        )
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    # recorded in the run directory's manifest: seqpipe may read it back
    manifest.write_whole(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
