"""After a crash: find and kill processes a built-in step left behind."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from agent.leftovers import remove_leftover_folders

__all__ = ["kill_step_processes", "remove_leftover_folders"]

log = logging.getLogger("shoal.dispatch")


def _belongs(pid: int, pgid: int, marker: bytes) -> bool:
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        # Fields after the parenthesised command: state ppid pgrp ...
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        if pgrp != pgid:
            return False
        return marker in (proc / "environ").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


def kill_step_processes(pgid: int, task_id: str) -> int:
    """Kill every process of group ``pgid`` that carries this task's id in its
    environment (so a reused pid of an unrelated process is never touched).
    Returns how many were killed."""
    marker = f"SHOAL_TASK_ID={task_id}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _belongs(int(entry.name), pgid, marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    if killed:
        log.info("killed orphaned step processes", extra={"task_id": task_id, "pgid": pgid,
                                                          "count": killed})
    return killed
