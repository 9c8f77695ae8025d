"""What a crashed run leaves behind in a work root: step folders, and step processes
that outlived their runner (a kill -9 of an agent, or of the server for the built-in
worker). Both are cleaned up when the runner starts again, before it takes any work."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

log = logging.getLogger("shoal.agent")


def _environ(pid: str) -> bytes:
    try:
        return (Path("/proc") / pid / "environ").read_bytes()
    except OSError:
        return b""


def kill_leftover_steps(work_root: Path) -> int:
    """Kill every process whose SHOAL_WORK_DIR is a step folder under ``work_root`` (the
    executor sets it on every step; nothing else has it). Call only when no step of this
    work root runs. Returns how many processes were killed."""
    marker = f"SHOAL_WORK_DIR={work_root.resolve()}/step-".encode()
    me = str(os.getpid())
    killed = 0
    proc = Path("/proc")
    if not proc.is_dir():
        return 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        if marker in _environ(entry.name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    if killed:
        log.warning("killed step processes left by an earlier run", extra={"count": killed})
    return killed


def remove_leftover_folders(work_root: Path) -> int:
    """Remove step folders a crash left under ``work_root`` (the executor makes them as
    ``step-*``), and artifact staging folders (``artifacts-*``, agent/artifacts.py); call
    only when no step runs. Returns how many were removed."""
    if not work_root.is_dir():
        return 0
    removed = 0
    for folder in [*work_root.glob("step-*"), *work_root.glob("artifacts-*")]:
        shutil.rmtree(folder, ignore_errors=True)
        removed += not folder.exists()
    if removed:
        log.info("removed step folders left by a crash", extra={"count": removed})
    return removed


def clean_work_root(work_root: Path) -> None:
    """Both of the above, processes first (they may still write into their folders)."""
    kill_leftover_steps(work_root)
    remove_leftover_folders(work_root)
