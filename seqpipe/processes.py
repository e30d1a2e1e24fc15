"""Records of a process that a later process can check: is the run or trial it left still being
worked on, or was its process killed? Standard library only (serving reads run states without torch)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None where unknown: with
    the pid, it names one process even after the pid is reused (a restarted container's pid 1)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """This process: host name, pid and start time, for :func:`process_ended` to check later."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def process_ended(record: dict[str, Any]) -> bool | None:
    """Whether the process ``record`` names (:func:`this_process`'s keys) has ended: True when no
    process has its pid here, or the pid now belongs to a process started at another time; False
    while it runs (another user's included); None where this machine cannot tell (another host,
    or no pid recorded)."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    recorded, now = record.get("started"), _started(pid)
    return recorded is not None and now is not None and recorded != now  # the pid was reused
