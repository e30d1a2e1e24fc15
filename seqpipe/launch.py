"""``seqpipe run --nproc N``: one torchrun job on this machine, checked before it starts.

The pipeline, its plugins and its data are checked here first, so a mistake is one line from
this process instead of the same line from every rank. The job is then started through
``torch.distributed.run`` in this process (``--standalone``, as the ``torchrun`` command would),
so a rank that fails ends it with one line naming the rank, not the launcher's traceback.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from seqpipe.errors import ConfigError, SeqpipeError


class RankFailed(SeqpipeError):
    """A rank of the job ended with an error; its own message is above."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_before_launch(
    registry,
    pipeline: Path | None,
    out: Path | None,
    force: bool,
    resume: Path | None,
    nproc: int,
    allow_changes: tuple[str, ...] = (),
) -> None:
    """What every rank would refuse, refused once here: the pipeline (or the run to resume), its
    plugins, its data, ``--out``, and more CUDA ranks than GPUs."""
    from seqpipe.assembly import training_device
    from seqpipe.run import resolve_run
    from seqpipe.rundir import check_out_dir

    resolved = resolve_run(pipeline, registry, resume)
    if resume is None and out is not None:
        check_out_dir(out, force)
    if training_device(resolved.config.training.device, f"{resolved.path}: training.device") == "cuda":
        import torch

        if torch.cuda.device_count() < nproc:
            raise ConfigError(
                f"{resolved.path}: training.device: --nproc {nproc} trains one rank per GPU, and torch sees "
                f'{torch.cuda.device_count()}; use --nproc {torch.cuda.device_count()} or set device = "cpu".'
            )
    resolved.prepare()
    if resume is not None:
        from seqpipe.resumed import changes_allowed

        changes_allowed(resume, resolved.as_dict(), allow_changes)


def torchrun(
    nproc: int,
    pipeline: Path | None,
    out: Path | None,
    force: bool,
    resume: Path | None,
    strict_plugins: bool,
    allow_changes: tuple[str, ...] = (),
) -> None:
    """Run ``python -m seqpipe run …`` as ``nproc`` ranks (one torch thread each unless
    ``OMP_NUM_THREADS`` says otherwise); return when all are done, raise :class:`RankFailed` when one
    failed. Ctrl-C or SIGTERM stops every rank (rank 0 records `interrupted` and prints the resume
    command) and exits with 130 or 143."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    command = (
        ["--standalone", f"--nproc_per_node={nproc}", "-m", "seqpipe", "run"]
        + ([str(pipeline)] if pipeline else ["--resume", str(resume)])
        + (["--out", str(out)] if out else [])
        + (["--force"] if force else [])
        + (["--strict-plugins"] if strict_plugins else [])
        + [arg for key in allow_changes for arg in ("--allow-changes", key)]
    )  # rank 0 alone makes the run directory
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the ranks share the cores; torch's own threads would fight
    # the failing rank prints its own one line and this function one more; torch's launcher log would
    # repeat them (its loggers each set their own level, so each is quietened)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(command))
    except SignalException as exc:  # Ctrl-C or SIGTERM: the launcher stopped the ranks, rank 0 said how to resume
        raise SystemExit(128 + int(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit code {code}"
        raise RankFailed(
            f"seqpipe run --nproc {nproc}: rank {rank} {how} (its message is above); the run directory records "
            "the state the job reached.",
            128 - code if code < 0 else code,
        ) from None
