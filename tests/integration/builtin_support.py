"""Helpers for the built-in worker process tests: a started BuiltInWorkerProcess, and
checks on what a step leaves behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from adapters.dispatch.builtin import BuiltInWorkerConfig, BuiltInWorkerProcess
from agent.ports import LogLine, PackageSource, StepRequest, StepResult
from tests.agent.support import Recorder, group_exists, request


def config(root: Path, **kw: Any) -> BuiltInWorkerConfig:
    """Quick kills (the tests stop many steps), folders under ``root``."""
    return BuiltInWorkerConfig(
        work_root=root / "work", packages_root=root / "packages", inbox=root / "inbox",
        **{"kill_grace": 0.5, **kw},
    )


@asynccontextmanager
async def started_worker(
    root: Path, packages: PackageSource | None = None, **kw: Any
) -> AsyncIterator[BuiltInWorkerProcess]:
    """A started built-in worker process, always stopped afterwards."""
    worker = BuiltInWorkerProcess(config(root, **kw), packages)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop(grace=10.0)


def step(root: Path, script: str, **kw: Any) -> StepRequest:
    """A request whose folders go under ``root``'s work root."""
    return request(root / "work", script, **kw)


async def run(
    worker: BuiltInWorkerProcess, req: StepRequest, cancel_when: Callable[[LogLine], bool] | None = None,
    **kw: Any,
) -> tuple[StepResult, Recorder]:
    """Run one step; ``cancel_when`` sets the cancel event at the first line it matches."""
    cancel = asyncio.Event()
    recorder = Recorder()
    if cancel_when is not None:
        recorder.on_line = lambda line: cancel.set() if cancel_when(line) else None
    result = await worker.run(req, recorder, cancel, recorder.started, **kw)
    return result, recorder


def step_folders(root: Path) -> list[Path]:
    """Step folders (and artifact staging folders) left under the work root."""
    work = root / "work"
    return sorted([*work.glob("step-*"), *work.glob("artifacts-*")]) if work.exists() else []


async def group_gone(pgid: int, timeout: float = 5.0) -> bool:
    """Wait until no process is left in group ``pgid`` (orphans are reaped by init)."""
    deadline = time.monotonic() + timeout
    while group_exists(pgid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def line_seen(recorder: Recorder, text: str, timeout: float = 10.0) -> None:
    """Wait until ``text`` is a line of the step's log."""
    deadline = time.monotonic() + timeout
    while text not in recorder.texts():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in the log: {recorder.texts()}")
        await asyncio.sleep(0.01)
