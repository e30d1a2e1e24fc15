"""What a run needs to continue after its last complete epoch, in one safetensors file.

``resume.safetensors`` in the run directory holds the model's current weights, the weight average
(EMA) if any, the optimizer's moments, torch's random state and the data-order generator's state;
its metadata holds the trainer's counters (epoch, best score, patience, time spent) and the
optimizer's parameter groups (learning rates). One file written atomically: a run killed at any
moment leaves either the previous epoch's state or this one's, never a mix. ``trainer_state.json``
beside it is the same counters for people to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from seqpipe import manifest

RESUME_FILE = "resume.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"


def save_training_state(
    run_dir: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    counters: dict[str, Any],
    rank_rng: list[torch.Tensor] | None = None,
    history: list[dict] | None = None,
) -> None:
    """``rank_rng``: in a job of several processes, every rank's torch random state (rank 0's first);
    everything else is the same on every rank, so rank 0's copy is the job's. ``history``: the epochs'
    records so far, kept here (checked by the manifest) so a resumed run never reads them back from
    history.jsonl, a log anyone may edit."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            tensors[f"optimizer.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    for rank, rng in enumerate(rank_rng or []):
        if rank:
            tensors[f"rng.torch.rank{rank}"] = rng
    counters = {**counters, "processes": len(rank_rng) if rank_rng else 1}
    tensors["rng.data_order"] = generator.get_state()
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    state = {**counters, "param_groups": optimizer_state["param_groups"], "history": history or []}
    manifest.write_whole(
        run_dir / RESUME_FILE, lambda tmp: save_file(tensors, tmp, metadata={"trainer_state": json.dumps(state)})
    )
    manifest.write_whole(
        run_dir / TRAINER_STATE_FILE,
        lambda tmp: Path(tmp).write_text(json.dumps(counters, indent=2) + "\n", encoding="utf-8"),
    )


def load_training_state(
    run_dir: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore everything :func:`save_training_state` wrote; return the trainer's counters.
    ``rank``: this process's rank, whose own random state is restored when the file has it (a rank
    the saved job did not have keeps the state it was seeded with)."""
    manifest.verify(
        run_dir / RESUME_FILE,
        run_dir,
        fix=f"start the run again: seqpipe run {run_dir / 'pipeline.toml'} --out {run_dir} --force",
    )
    with safe_open(str(run_dir / RESUME_FILE), framework="pt") as fh:
        state = json.loads(fh.metadata()["trainer_state"])
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")})
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": state.pop("param_groups")})
    own = "rng.torch" if rank == 0 else f"rng.torch.rank{rank}"
    if own in tensors:
        torch.set_rng_state(tensors[own])
    generator.set_state(tensors["rng.data_order"])
    return state
