"""Script steps whose process the server itself drives: the built-in worker (a local
child process) and, through the same steps, SSH workers (a remote one). The task run
records StepStarted, log batches and StepFinished itself, as the runner reports them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.ports import LogLine, PackageFile, StepRequest, StepResult
from domain.messages import PackageRef
from domain.plan import StepState

if TYPE_CHECKING:
    from adapters.dispatch.execution import Execution
    from adapters.dispatch.taskrun import TaskRun

SERVER_STOPPED = "server stopped during step"

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
    name, actor = request.step_name, run.ctx.actor

    async def sink(lines: Sequence[LogLine]) -> None:
        batch = [[_iso(line.at), line.stream, line.text] for line in lines]
        await asyncio.to_thread(run.append_log_sync, name, batch)

    async def started(pid: int, at: datetime | None = None) -> None:
        await run._update(lambda t: t.mark_started(name, pid, actor, at))

    try:
        result: StepResult = await runner.run(request, sink, run.cancel, started, *extra)
    except asyncio.CancelledError:
        # The server is stopping (the runner has stopped the step's processes): record
        # it, so the task does not look as if the step were still running.
        await asyncio.shield(run._finish_step(name, StepState.FAILED, reason=SERVER_STOPPED))
        raise
    return await run._finish_step(name, OUTCOMES[result.outcome], result.exit_code, result.reason)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")
