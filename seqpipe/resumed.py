"""What a resumed run may change: the pipeline file a run directory holds is compared, key by key
(with every default filled in), with the configuration the run started with (``config.json``).

A run continues from saved weights, optimizer moments and data order; a change to the model, the
data or the optimizer would silently train something else than either configuration describes, so
it is refused naming the keys. Only the training budget and the export settings (which graphs,
the parity tolerance: applied after training) may change, and only when asked for
(``--allow-changes``); the change is recorded in ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqpipe import manifest
from seqpipe.errors import RunDirectoryError

SAFE_CHANGES = ("training.epochs", "training.patience", "training.max_minutes", "export.")  # "export." : any export key
# where the run directory's copy is read from, not what the run is: differs between the two by design
NOT_COMPARED = ("data.relative_to", "resumed_changes")


def changes_allowed(run_dir: Path, now: dict[str, Any], allow: Sequence[str]) -> dict[str, Any]:
    """The configuration the resumed run goes on with: ``now`` (resolved from the run directory's
    pipeline file), if it differs from the saved one only in keys ``allow`` names; with the
    changes recorded under ``resumed_changes``. Anything else is a one-line refusal."""
    allowed = {_full_key(key, run_dir) for item in allow for key in item.split(",") if key.strip()}
    saved_file = run_dir / "config.json"
    manifest.verify(
        saved_file, run_dir, fix=f"start the run again: seqpipe run {run_dir / 'pipeline.toml'} --out {run_dir} --force"
    )
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    before, after = _flat(saved), _flat(now)
    changed = {
        key: (before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key) and not key.startswith(NOT_COMPARED)
    }
    said = ", ".join(f"{key} ({json.dumps(old)} -> {json.dumps(new)})" for key, (old, new) in changed.items())
    unsafe = [key for key in changed if not _safe(key)]
    if unsafe:
        raise RunDirectoryError(
            f"--resume {run_dir}: {run_dir / 'pipeline.toml'} (or seqpipe's defaults) changed since the run "
            f"started: {said}; the saved state cannot continue under {', '.join(unsafe)}: put the old "
            f"value back, or start a new run: seqpipe run {run_dir / 'pipeline.toml'}"
        )
    if set(changed) - allowed:
        keys = " ".join(sorted(set(changed) - allowed))
        raise RunDirectoryError(
            f"--resume {run_dir}: {run_dir / 'pipeline.toml'} changed since the run started: {said}; continue "
            f"with the new value with: seqpipe run --resume {run_dir} --allow-changes {keys} (or put the old one back)"
        )
    now = {
        **now,
        "data": {**now["data"], "relative_to": saved["data"]["relative_to"]},
        "resumed_changes": list(saved.get("resumed_changes", [])),
    }
    epoch = _epochs_done(run_dir)
    now["resumed_changes"] += [
        {"key": key, "from": old, "to": new, "after_epoch": epoch} for key, (old, new) in changed.items()
    ]
    return now


def _full_key(key: str, run_dir: Path) -> str:
    key = key.strip()
    full = key if "." in key else f"training.{key}"
    if not _safe(full):
        raise RunDirectoryError(
            f"--allow-changes {key}: a resumed run ({run_dir}) may change only training.epochs, "
            "training.patience, training.max_minutes and export keys; for anything else start a new run."
        )
    return full


def _safe(key: str) -> bool:
    return key in SAFE_CHANGES or any(key.startswith(prefix) for prefix in SAFE_CHANGES if prefix.endswith("."))


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _epochs_done(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
