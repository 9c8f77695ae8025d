"""Script steps whose process the server itself drives: the built-in worker (a local
child process) and, through the same steps, SSH workers (a remote one). The task run
records StepStarted, log batches and StepFinished itself, as the runner reports them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.ports import LogLine, PackageFile, StepRequest, StepResult
from domain.errors import InvalidTransition
from domain.messages import PackageRef
from domain.plan import StepState

if TYPE_CHECKING:
    from adapters.dispatch.execution import Execution
    from adapters.dispatch.taskrun import TaskRun

SERVER_STOPPED = "server stopped during step"
# How long a step's start may wait to be saved with its end (see _Start).
START_GRACE_S = 0.05

log = logging.getLogger("shoal.dispatch")

OUTCOMES = {
    "success": StepState.SUCCESS,
    "failed": StepState.FAILED,
    "timed_out": StepState.TIMED_OUT,
    "cancelled": StepState.CANCELLED,
}


def step_request(
    run: TaskRun, execution: Execution, worker_name: str, pool_name: str,
    packages: tuple[PackageRef, ...], run_as_user: str | None = None,
) -> StepRequest:
    """What the runner needs to run this execution of a step of the task (its events
    and log go under ``step_name``, the execution's key)."""
    step = execution.step
    assert step.syntax is not None and step.script_body is not None
    return StepRequest(
        task_id=str(run.task_id),
        step_name=execution.key,
        syntax=step.syntax.value,
        script=step.script_body,
        env=execution.env(run.task_id, worker_name, pool_name),
        work_root=run.ctx.work_root,
        timeout_s=step.timeout_s,
        run_as_user=run_as_user,
        max_log_bytes=run.ctx.log_limit_bytes,
        packages=tuple(PackageFile(p.id, p.version, p.sha256, p.file_name) for p in packages),
    )


async def run_on_server(
    run: TaskRun, request: StepRequest, runner: Any, *extra: Any
) -> StepState:
    """Run ``request`` through ``runner`` (``run(request, sink, cancel, on_started,
    *extra)``) and record what happens as the task's events."""
    name = request.step_name
    start = _Start(run, name)

    async def sink(lines: Sequence[LogLine]) -> None:
        await start.record()  # a step's start comes before its first line
        batch = [[_iso(line.at), line.stream, line.text] for line in lines]
        await asyncio.to_thread(run.append_log_sync, name, batch)

    try:
        result: StepResult = await runner.run(request, sink, run.cancel, start.note, *extra)
    except asyncio.CancelledError:
        # The server is stopping (the runner has stopped the step's processes): record
        # it, so the task does not look as if the step were still running.
        await asyncio.shield(
            run._finish_step(name, StepState.FAILED, reason=SERVER_STOPPED, started=start.take())
        )
        raise
    started = await start.with_end()
    return await run._finish_step(
        name, OUTCOMES[result.outcome], result.exit_code, result.reason, started=started
    )


class _Start:
    """When a step's process began, recorded START_GRACE_S later at the latest, or
    before its first log line, or with its end if that comes first: a quick step then
    costs one save for its start and end instead of two. The event keeps the moment the
    process began, whenever it is saved."""

    def __init__(self, run: TaskRun, step: str) -> None:
        self._run = run
        self._step = step
        self._pending: tuple[int, datetime] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._later: asyncio.Task[None] | None = None
        # Held while the start is being saved: a log batch or the end waits for it.
        self._saving = asyncio.Lock()

    async def note(self, pid: int, at: datetime | None = None) -> None:
        """The runner's on_started: remember the start, and when to record it anyway."""
        self._pending = (pid, at or datetime.now(UTC))
        self._timer = asyncio.get_running_loop().call_later(START_GRACE_S, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._pending is not None:
            self._later = asyncio.get_running_loop().create_task(self._record_quietly())

    async def _record_quietly(self) -> None:
        try:
            await self.record()
        except InvalidTransition as exc:  # the step was ended meanwhile (the server stops)
            log.info("start not recorded", extra={"task_id": str(self._run.task_id),
                                                  "error": str(exc)})

    async def record(self) -> None:
        """Record the start now, if it is still to be recorded."""
        async with self._saving:
            started = self.take()
            if started is not None:
                pid, at = started
                actor = self._run.ctx.actor
                await self._run._update(lambda t: t.mark_started(self._step, pid, actor, at))

    def take(self) -> tuple[int, datetime] | None:
        """The start still to record (pid, when), which the caller now records."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started, self._pending = self._pending, None
        return started

    async def with_end(self) -> tuple[int, datetime] | None:
        """For the step's end: the start still to record with it (once a save of the
        start already under way is done)."""
        async with self._saving:
            return self.take()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")
