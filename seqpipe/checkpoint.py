"""Checkpoints as safetensors (never pickle), written atomically so a crash never leaves half a file."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from seqpipe import manifest


def save_checkpoint(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # in a run directory, its SHA-256 goes to manifest.json
    manifest.write_whole(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Weights from ``path``, refused if its run directory's manifest holds another SHA-256."""
    manifest.verify(path, fix="the run's best weights cannot be trusted; run the pipeline again")
    model.load_state_dict(load_file(str(path)))
