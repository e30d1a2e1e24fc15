"""A run directory's state, ``status.json``: running, interrupted, stopped, failed or done.

Written by the engine as a run goes (atomically: readers never see half a file), read by
``seqpipe predict`` so that a run that did not finish is never served as if it had. Standard
library only: serving reads it without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seqpipe.manifest import write_whole
from seqpipe.processes import process_ended, this_process

STATUS_FILE = "status.json"
STATES = ("running", "interrupted", "stopped", "failed", "done")


def write_status(run_dir: Path, state: str, **details: Any) -> None:
    """Record ``state`` (one of :data:`STATES`) with ``details`` (e.g. the error line)."""
    assert state in STATES, state
    record = {
        "state": state,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **this_process(),
        **details,
    }
    text = json.dumps(record, indent=2) + "\n"
    write_whole(run_dir / STATUS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), recorded=False)


@contextlib.contextmanager
def status_recorded(run_dir: Path) -> Iterator[None]:
    """``running`` while the block runs; then ``done``, ``interrupted`` (Ctrl-C, SIGTERM) or
    ``failed`` with the error's first line."""
    write_status(run_dir, "running")
    try:
        yield
    except (KeyboardInterrupt, Terminated) as exc:
        _try_write_status(run_dir, "interrupted")
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # a torchrun job continues with as many processes
        resume = f"seqpipe run --resume {run_dir}" + (f" --nproc {processes}" if processes > 1 else "")
        setattr(exc, "resume_command", resume)  # noqa: B010  (the CLI's one line names it)
        raise
    except Stopped as exc:
        _try_write_status(run_dir, "stopped", reason=str(exc))
        raise
    except BaseException as exc:
        _try_write_status(run_dir, "failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    write_status(run_dir, "done")


def _try_write_status(run_dir: Path, state: str, **details: Any) -> None:
    """Record how a run ended, unless the disk that just failed it cannot take the record either: the
    run's own error is the one to report (and a 'running' left by a process that is gone reads as
    stopped, see :func:`vanished`)."""
    try:
        write_status(run_dir, state, **details)
    except OSError:
        pass


class Stopped(Exception):
    """Raised by a caller's per-epoch hook to end a run on purpose (a tuning trial pruned): the run
    directory records ``stopped`` with the reason, not a failure."""


class Terminated(Exception):
    """Raised in the main thread when the process receives SIGTERM (see the ``run`` command), so a
    terminated run records its state like an interrupted one."""


_signalled: type[BaseException] | None = None


@contextlib.contextmanager
def signals_stop_the_run() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated`, and each is remembered:
    Python runs a signal handler wherever the main thread is, and an exception raised inside a
    finalizer (``__del__``, a weakref callback) is printed and dropped, so the trainer also calls
    :func:`raise_if_signalled` after every batch; a Ctrl-C is never lost."""
    import signal

    global _signalled

    def handler(signum, frame):
        global _signalled
        _signalled = KeyboardInterrupt if signum == signal.SIGINT else Terminated
        raise _signalled()

    _signalled = None
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _signalled = None


def signalled() -> type[BaseException] | None:
    """The exception of the SIGINT or SIGTERM received inside :func:`signals_stop_the_run`, if any."""
    return _signalled


def raise_if_signalled() -> None:
    """Raise the remembered signal's exception again, in case the first was lost (see above)."""
    if _signalled is not None:
        raise _signalled()


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The recorded state, or None for a directory without one (a single file, an older run)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError):
        return {"state": "unreadable"}


def vanished(status: dict[str, Any]) -> bool:
    """True when a run recorded as ``running`` on this machine has no process left (killed with
    SIGKILL, crashed in native code, the machine restarted): it will never finish on its own. A
    run recorded on another machine (a shared disk) is not judged."""
    return status.get("state") == "running" and process_ended(status) is True


def unfinished_hint(run_dir: Path, status: dict[str, Any]) -> str:
    """Why the run in ``run_dir`` is not a finished model, and what to do, for one error line."""
    gone = vanished(status)
    state = "stopped without finishing (its process is gone: killed or crashed)" if gone else status.get("state")
    reason = f": {status['error']}" if status.get("error") else ""
    if status.get("state") == "running" and not gone:
        action = "wait for it to finish"
    elif (gone or status.get("state") == "interrupted") and (run_dir / "resume.safetensors").is_file():
        action = f"continue it from its last complete epoch: seqpipe run --resume {run_dir}"
    else:
        action = f"run the pipeline again: seqpipe run {run_dir / 'pipeline.toml'}"
    return f"this run is {state} (status.json{reason}), not a finished model; {action}"
