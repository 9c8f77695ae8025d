"""Helpers for the executor tests: a recording sink, request defaults, group checks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.executor import LogLine, StepExecutor, StepRequest, StepResult

STEP_ENV = {
    "SHOAL_TASK_ID": "task-1",
    "SHOAL_STEP_NAME": "Say hello",
    "SHOAL_WORKER_NAME": "built-in worker",
    "SHOAL_WORKER_POOL": "Default Worker Pool",
}


def request(work_root: Path, script: str, syntax: str = "bash", **kw: Any) -> StepRequest:
    """A step request with the usual SHOAL_* variables."""
    env: Mapping[str, str] = kw.pop("env", STEP_ENV)
    return StepRequest(
        task_id=env.get("SHOAL_TASK_ID", "task-1"),
        step_name="Say hello",
        syntax=syntax,
        script=script,
        env=env,
        work_root=work_root,
        **kw,
    )


class Recorder:
    """A sink that keeps every batch; ``on_line`` is called for each line as it arrives."""

    def __init__(self, on_line: Callable[[LogLine], None] | None = None) -> None:
        self.batches: list[list[LogLine]] = []
        self.on_line: Callable[[LogLine], object] | None = on_line
        self.events: list[str] = []  # "started" / "batch", to check what came first

    async def __call__(self, batch: Sequence[LogLine]) -> None:
        self.events.append("batch")
        self.batches.append(list(batch))
        if self.on_line is not None:
            for line in batch:
                self.on_line(line)

    async def started(self, pid: int, at: datetime | None = None) -> None:
        """An on_started callback."""
        self.events.append("started")
        self.pid = pid
        self.started_at = at

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]

    def texts(self, stream: str | None = None) -> list[str]:
        """The lines' texts, of one stream or all."""
        return [line.text for line in self.lines if stream is None or line.stream == stream]


def run_step(
    req: StepRequest,
    executor: StepExecutor | None = None,
    sink: Recorder | None = None,
    cancel_when: Callable[[LogLine], bool] | None = None,
) -> tuple[StepResult, Recorder]:
    """Run one step to its end in a fresh event loop; ``cancel_when`` sets the cancel
    event when a line matching it arrives."""
    executor = executor or StepExecutor()

    async def main() -> tuple[StepResult, Recorder]:
        cancel = asyncio.Event()
        recorder = sink or Recorder()
        if cancel_when is not None:
            recorder.on_line = lambda line: cancel.set() if cancel_when(line) else None
        result = await executor.run(req, recorder, cancel=cancel, on_started=recorder.started)
        return result, recorder

    return asyncio.run(main())


def group_exists(pgid: int) -> bool:
    """True while any process (zombies included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def process_exists(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start
