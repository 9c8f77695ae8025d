"""A script step on an external worker, from the task run's side: send the signed
instruction, then follow the step through the Task events that the worker's reports
become (adapters/workers/reports.py) until it ends, is taken back, or is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING
from uuid import UUID

from adapters.workers.gateway import Sent, WorkerUnavailable
from domain.errors import Conflict, NotFound
from domain.messages import CancelStep, ExecStep, PackageRef
from domain.plan import StepState

if TYPE_CHECKING:
    from adapters.dispatch.execution import Execution
    from adapters.dispatch.taskrun import TaskRun

# How long a worker may take to confirm a cancel by its final report before the server
# records the step as cancelled itself.
CANCEL_GRACE_S = 10.0
# A worker enforces the step's timeout itself; the server waits this much longer for the
# worker's last word before deciding alone.
TIMEOUT_GRACE_S = 30.0


class ExternalStep:
    """One execution of a step on one worker."""

    def __init__(
        self, run: TaskRun, execution: Execution, worker_id: UUID, worker_name: str,
        pool_name: str, packages: tuple[PackageRef, ...] = (), capacity: int | None = None,
    ) -> None:
        self.run_ = run
        self.packages = packages
        self.execution = execution
        self.step = execution.step
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.pool_name = pool_name
        self.capacity = capacity

    async def run(self) -> StepState | None:
        """Send the step to the worker (its assignment is recorded) and follow it. None:
        the worker could not take it, or lost it before it started; route it again."""
        run, ctx, step = self.run_, self.run_.ctx, self.step
        task = run.known
        assert task is not None and step.syntax is not None and step.script_body is not None
        key = self.execution.key
        current = task.run_of(key)
        assert current.assignment is not None
        instruction = ExecStep(
            worker_id=str(self.worker_id), task_id=str(run.task_id), step=key,
            assignment=current.assignment, syntax=step.syntax.value, script=step.script_body,
            env=self.execution.env(run.task_id, self.worker_name, self.pool_name),
            timeout_s=step.timeout_s, max_log_bytes=ctx.log_limit_bytes,
            # A polling agent back after this finds the server has given up on it.
            expires_at=time.time() + ctx.wait_limit_s,
            packages=self.packages, capacity=self.capacity,
        )
        try:
            comms = await ctx.hub.comms_style(self.worker_id)
            sent = await ctx.hub.gateway.exec(comms, instruction)
        except NotFound:
            await self._take_back("it was deregistered")
            return None
        except WorkerUnavailable as exc:
            await self._take_back(str(exc))
            if exc.offline:
                # Best effort: the step is back in the queue already. Conflict: steps of the
                # same worker, and its heartbeats, recorded the change at the same moment;
                # the heartbeat monitor settles it either way.
                with contextlib.suppress(NotFound, Conflict):
                    await asyncio.to_thread(
                        ctx.app.record_worker_offline, self.worker_id, str(exc), actor=ctx.actor
                    )
            else:
                # It answered no (at capacity, or it could not verify us): route to others,
                # rather than asking it again at once and recording a refusal each time.
                self.run_.refused[self.worker_id] = time.monotonic()
            return None
        return await self.follow(current.assignment, sent)

    async def _take_back(self, why: str) -> None:
        ctx, name = self.run_.ctx, self.execution.key
        reason = f"worker {self.worker_name!r} could not take the step: {why}"
        await self.run_._update(lambda t: t.requeue(name, reason, ctx.actor))

    async def follow(self, assignment: int, sent: Sent | None) -> StepState | None:
        """Wait for the step of this assignment to end; handle cancel and a silent worker."""
        run, ctx, name = self.run_, self.run_.ctx, self.execution.key
        loop = asyncio.get_running_loop()
        cancel_at: float | None = None
        running_since: float | None = None
        while True:
            run.changed.clear()  # before reading, so a change while we read is not lost
            task = await run.latest()
            state = task.run_of(name)
            if state.state.is_final:
                return state.state
            if state.assignment != assignment:
                # Taken back (its worker was lost before starting it): withdraw our copy.
                if sent is not None:
                    await ctx.hub.gateway.withdraw(sent)
                return None
            now = loop.time()
            if state.state is StepState.RUNNING and running_since is None:
                running_since = now
            if cancel_at is None and (run.cancel.is_set() or task.cancel_requested):
                cancel_at = now
                if state.state is StepState.ASSIGNED and sent is not None \
                        and await ctx.hub.gateway.withdraw(sent):
                    return await run._finish_step(name, StepState.CANCELLED, reason="cancelled")
                await ctx.hub.gateway.cancel(
                    CancelStep(str(self.worker_id), str(run.task_id), name, assignment)
                )
            elif cancel_at is not None and now - cancel_at > CANCEL_GRACE_S:
                return await run._finish_step(
                    name, StepState.CANCELLED,
                    reason=f"cancelled (worker {self.worker_name!r} did not confirm within "
                    f"{CANCEL_GRACE_S:g}s)",
                )
            limit = self.step.timeout_s
            overdue = running_since is not None and limit is not None \
                and now - running_since > limit + TIMEOUT_GRACE_S
            if overdue:
                return await run._finish_step(
                    name, StepState.TIMED_OUT,
                    reason=f"timed out after {self.step.timeout_s:g}s (worker "
                    f"{self.worker_name!r} did not report the end)",
                )
            await self._wait_for_news(cancel_requested=cancel_at is not None)

    async def _wait_for_news(self, *, cancel_requested: bool) -> None:
        """Until the task changes (or a cancel comes), for a second at most."""
        run = self.run_
        waits = [asyncio.ensure_future(run.changed.wait())]
        if not cancel_requested:
            waits.append(asyncio.ensure_future(run.cancel.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not done:
            run.offer(None)  # a second without news: look at the store itself
