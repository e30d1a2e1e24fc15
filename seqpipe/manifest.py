"""A run directory's ``manifest.json``: the SHA-256 of every file seqpipe writes there and reads back
later (resume state, best weights, the resolved config, the ONNX graphs), checked on every read, so a
file damaged on disk (a truncated copy, a flipped byte) or edited by hand is refused in one line
instead of being trained on or served.

A file is replaced in three steps, so that a run killed at any moment leaves a manifest that accepts
whichever version is on disk: the manifest first accepts the new file's hash beside the old one, then
the file is renamed into place, then the old hash is dropped. Standard library only: serving reads it
without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqpipe.errors import DamagedFileError

MANIFEST_FILE = "manifest.json"
FORMAT = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start(run_dir: Path) -> None:
    """Give a new run directory its (empty) manifest: from now on its files are recorded."""
    _write(run_dir, {"format": FORMAT, "files": {}})


def run_dir_of(path: Path, marker: str = MANIFEST_FILE) -> Path | None:
    """The run directory holding ``path`` (``RUN/x`` or ``RUN/onnx/x``): the nearest folder with the
    file ``marker`` (a manifest, or status.json); None for a file outside any run directory (nothing
    to record or check)."""
    for folder in list(Path(path).resolve().parents)[:2]:
        if (folder / marker).is_file():
            return folder
    return None


def write_whole(path: Path, write: Callable[[str], object], *, recorded: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it (the same
    folder, so the rename is atomic), which then takes ``path``'s place, through :func:`replace`
    (its SHA-256 into the run directory's manifest) when ``recorded``, else by a plain rename (a file
    seqpipe never checks: the manifest itself, status.json, the report). A reader never sees half a
    file, and the temporary file never stays behind, whatever happens."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        (replace if recorded else os.replace)(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace(tmp: str | Path, path: Path) -> None:
    """``os.replace(tmp, path)``, keeping the manifest of ``path``'s run directory (if any) true at
    every moment (see the module's docstring)."""
    run_dir = run_dir_of(path)
    if run_dir is None:
        os.replace(tmp, path)
        return
    name, new = _key(run_dir, path), sha256(Path(tmp))
    manifest = _read(run_dir)
    old = manifest["files"].get(name, {}).get("sha256")
    if old is not None and old != new:
        manifest["files"][name] = {
            "sha256": new,
            "previous": old,
        }  # killed before the rename: the old file still verifies
    else:
        manifest["files"][name] = {"sha256": new}
    _write(run_dir, manifest)
    os.replace(tmp, path)
    if "previous" in manifest["files"][name]:
        manifest["files"][name] = {"sha256": new}
        _write(run_dir, manifest)


def record(*paths: Path) -> None:
    """Record files of one run directory, just written in place (not through :func:`replace`), in its manifest."""
    run_dir = run_dir_of(paths[0]) if paths else None  # one run directory: read and written once
    if run_dir is not None:
        manifest = _read(run_dir)
        for path in paths:
            manifest["files"][_key(run_dir, path)] = {"sha256": sha256(path)}
        _write(run_dir, manifest)


def forget(path: Path) -> None:
    """Drop a file seqpipe deleted (the resume state of a finished run) from the manifest."""
    run_dir = run_dir_of(path)
    if run_dir is not None:
        manifest = _read(run_dir)
        if manifest["files"].pop(_key(run_dir, path), None) is not None:
            _write(run_dir, manifest)


def lists(path: Path, run_dir: Path | None = None) -> bool:
    """Whether the manifest of ``path``'s run directory (``run_dir``, or the nearest) lists it."""
    run_dir = run_dir or run_dir_of(path)
    if run_dir is None:
        return False
    manifest = _read_if_any(run_dir)
    return manifest is not None and _key(run_dir, path) in manifest["files"]


def verify(path: Path, run_dir: Path | None = None, *, fix: str) -> None:
    """Refuse ``path`` in one line unless its SHA-256 is the one its run directory's manifest holds.

    ``run_dir``: the run directory the file belongs to, when the caller knows it (a run directory
    without a manifest is then refused too); otherwise the nearest folder with a manifest, and a file
    outside any is not checked. ``fix``: what to do, for the error line."""
    run_dir = run_dir or run_dir_of(path)
    if run_dir is None:
        return
    manifest = _read_if_any(run_dir)
    if manifest is None:
        raise DamagedFileError(
            f"{run_dir}: has no {MANIFEST_FILE} (the SHA-256 of the files seqpipe wrote); the run directory is "
            f"damaged or from an older seqpipe, so {path.name} cannot be trusted; {fix}."
        )
    entry = manifest["files"].get(_key(run_dir, path))
    if entry is None:
        raise DamagedFileError(
            f"{path}: not in {run_dir / MANIFEST_FILE}: seqpipe did not finish writing it (the run stopped "
            f"first) or it was put there by hand; {fix}."
        )
    if not Path(path).is_file():
        raise DamagedFileError(f"{path}: missing, though {MANIFEST_FILE} lists it; {fix}.")
    if sha256(Path(path)) not in (entry["sha256"], entry.get("previous")):
        raise DamagedFileError(
            f"{path}: its SHA-256 differs from the one in {MANIFEST_FILE}: the file was damaged or edited "
            f"after seqpipe wrote it, and is not used; {fix}."
        )


def _key(run_dir: Path, path: Path) -> str:
    return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()


def _read(run_dir: Path) -> dict[str, Any]:
    manifest = _read_if_any(run_dir)
    if manifest is None:
        raise FileNotFoundError(run_dir / MANIFEST_FILE)
    return manifest


def _read_if_any(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's manifest, or None where it has none."""
    file = run_dir / MANIFEST_FILE
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedFileError(
            f"{file}: unreadable ({type(exc).__name__}); the run directory is damaged and its files cannot "
            "be trusted; run the pipeline again."
        ) from None
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("files"), dict)
        or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in manifest["files"].values())
    ):
        raise DamagedFileError(
            f"{file}: not a seqpipe manifest (edited or damaged); the run directory's files cannot be "
            "trusted; run the pipeline again."
        )
    return manifest


def _write(run_dir: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_whole(run_dir / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), recorded=False)
