"""One task's run on this node: its groups of steps in order, each step by its action.

Resumable: a task picked up again after a restart skips the steps that have ended and
carries on with the rest, judging conditions by what happened before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from adapters.dispatch.behalf import run_on_behalf
from adapters.dispatch.execution import Execution
from adapters.dispatch.external import ExternalStep
from adapters.dispatch.inserver import import_certificate, run_intervention, send_email_step
from adapters.dispatch.onserver import SERVER_STOPPED, run_on_server, step_request
from adapters.dispatch.payloads import UnknownPackage, built_in_artifacts, resolve_packages
from adapters.dispatch.routes import StepRouter
from adapters.dispatch.sshstep import run_on_ssh
from adapters.nats.objects import ObjectFiles
from adapters.workers.hub import WorkerHub
from agent.ports import LogLine, StepRunner
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import InvalidTransition, NotFound
from domain.executions import scope_skip_reason
from domain.messages import PackageRef
from domain.plan import StepState, TaskState, groups, should_run, skip_reason, task_outcome
from domain.process import Action, Step
from domain.routing import (
    BUILT_IN_WORKER_NAME,
    Refuse,
    Route,
    RunOnBuiltIn,
    RunOnWorker,
)
from domain.tasks import Task
from domain.workers import CommsStyle
from projections.sql import Database
from projections.watch import PositionWatch

log = logging.getLogger("shoal.dispatch")


@dataclass(frozen=True)
class RunContext:
    """What every task run on this node shares."""

    hub: WorkerHub
    app: Shoal
    views: Database
    watch: PositionWatch
    executor: StepRunner  # the built-in worker
    actor: Actor
    work_root: Path
    wait_limit_s: float
    log_limit_bytes: int = 50 * 1024 * 1024
    artifacts: ObjectFiles | None = None  # where the built-in worker's artifacts go


class TaskRun:
    """Runs (or resumes) one task to its end."""

    def __init__(self, ctx: RunContext, task_id: UUID) -> None:
        self.ctx = ctx
        self.task_id = task_id
        self.cancel = asyncio.Event()
        self.changed = asyncio.Event()
        # The newest copy of the task this run has seen (its own saves, and what the report
        # intake saved and handed over): it changes a copy of this instead of reading the
        # store again. Saves land from threads and from the loop, hence the lock.
        self.known: Task | None = None
        self._known_lock = threading.Lock()
        # Someone changed the task without handing over a copy: the next look reads it.
        self._stale = False
        # Workers that answered "no" to a step of this task (e.g. a signature they could
        # not verify), and when: passed over for a while rather than asked again at once.
        self.refused: dict[UUID, float] = {}
        # Parallel steps of one task all write the same aggregate: one at a time, or
        # their saves conflict (and enough of them exhaust the retries).
        self._writing = threading.Lock()
        self._logging = threading.Lock()
        # Where the first step was sent when the task was claimed: (step, decision, pool
        # name, run-as user), used once by script().
        self._claimed_route: tuple[str, Route, str, str | None] | None = None
        # The log position of this node's claim of the task (0 until it claims it).
        self.claimed_at = 0
        self.router = StepRouter(ctx.app, ctx.views, ctx.hub, self.refused)

    # -- claiming ------------------------------------------------------------------------

    def claim(self, node: str) -> Task | None:
        """Take the queued task for ``node`` (in a worker thread); None when it was
        cancelled meanwhile or another node took it first (optimistic concurrency
        decides). When the first step is a plain script step, it is routed and assigned
        in the same save: one write, not two, before the step can start."""
        app, actor = self.ctx.app, self.ctx.actor
        try:
            task = app.get_task(self.task_id)
        except NotFound:
            return None
        if task.state is not TaskState.QUEUED:
            return None
        first = _first_plain_script(task)
        route_ = self.router.decide(Execution.of(first), 0) if first is not None else None

        def change(t: Task) -> None:
            t.start(node, actor)
            if first is not None and route_ is not None:
                self._assign(t, first.name, route_[0])

        try:
            saved = app.update_known_task(task, self.task_id, change)
        except (InvalidTransition, NotFound):
            return None
        self.keep(saved.aggregate)
        self.claimed_at = saved.position
        if first is not None and route_ is not None:
            decision, pool_name, run_as_user = route_
            if isinstance(decision, RunOnBuiltIn | RunOnWorker):
                self._claimed_route = (first.name, decision, pool_name, run_as_user)
            if isinstance(decision, RunOnWorker):
                self.ctx.hub.count(decision.worker_id, +1)  # undone when the step leaves it
        return saved.aggregate

    def _release_claimed_route(self) -> None:
        """The first step will not run after all (the task was cancelled first)."""
        claimed, self._claimed_route = self._claimed_route, None
        if claimed is not None and isinstance(claimed[1], RunOnWorker):
            self.ctx.hub.count(claimed[1].worker_id, -1)

    # -- what the task looks like now ------------------------------------------------------

    def keep(self, task: Task) -> None:
        """Remember ``task`` as saved, unless a newer copy is known already."""
        with self._known_lock:
            if self.known is None or task.version >= self.known.version:
                self.known = task

    def offer(self, task: Task | None) -> None:
        """Something changed the task (on the loop): ``task`` is how it saved it, or None
        when it did not say, and the next look goes to the store."""
        if task is None:
            self._stale = True
        else:
            self.keep(task)
        self.changed.set()

    async def latest(self) -> Task:
        """The task as it is now: the newest copy handed over, or read from the store
        when a change came without one."""
        if self._stale or self.known is None:
            return await self._load()
        return self.known

    # -- writing, off the event loop -------------------------------------------------------

    def _update_sync(self, change: Callable[[Task], None]) -> Task:
        with self._writing:
            saved = self.ctx.app.update_known_task(self.known, self.task_id, change)
            self.keep(saved.aggregate)
            return saved.aggregate

    def append_log_sync(self, step: str, batch: list[list[str]]) -> None:
        """Add a batch of the step's log lines (from a worker thread)."""
        with self._logging:  # parallel steps share the task's log aggregate too
            self.ctx.app.append_log(self.task_id, step, batch, actor=self.ctx.actor)

    async def _update(self, change: Callable[[Task], None]) -> Task:
        return await asyncio.to_thread(self._update_sync, change)

    async def _load(self) -> Task:
        self._stale = False  # before reading: a change meanwhile marks it again
        self.keep(await asyncio.to_thread(self.ctx.app.get_task, self.task_id))
        assert self.known is not None
        return self.known

    async def _finish_step(
        self, step: str, outcome: StepState, exit_code: int | None = None, reason: str = "",
        started: tuple[int, datetime] | None = None,
    ) -> StepState:
        """Record how the step ended (and the task's end, if it was the last); with
        ``started`` (pid, when), its start too, in the same save."""
        actor = self.ctx.actor

        def change(task: Task) -> None:
            if started is not None and task.run_of(step).state is StepState.ASSIGNED:
                task.mark_started(step, started[0], actor, started[1])
            if not task.run_of(step).state.is_final:
                task.finish_step(step, outcome, exit_code, reason, actor)
            task.finish_if_done(actor)

        task = await self._update(change)
        return task.run_of(step).state

    # -- the task --------------------------------------------------------------------------

    async def run(self, task: Task | None = None) -> TaskState:
        """Run the remaining steps and record the task's end. ``task`` is the aggregate
        as the caller last saved it (saves a load)."""
        task = await self._load() if task is None else task
        self.keep(task)
        # Judged by steps, group by group: a failed execution of a step still running (on
        # behalf of targets, resumed) is that step's business, not an earlier failure.
        failed = False
        for group in groups(task.steps):
            steps = [task.steps[i] for i in group]
            pending = [s for s in steps if not task.runs[s.name].state.is_final]
            failed = failed or any(task.runs[s.name].state.is_failure for s in steps)
            if not pending:
                continue
            if self.cancel.is_set() or task.cancel_requested:
                self._release_claimed_route()
                for step in pending:
                    await self._finish_step(step.name, StepState.SKIPPED, reason="task cancelled")
                continue
            async with asyncio.TaskGroup() as group_tasks:
                runs = [group_tasks.create_task(self._run_step(step, failed)) for step in pending]
            failed = failed or any(r.result().is_failure for r in runs)
            task = await self._load() if self.cancel.is_set() else task
        # Normally the last step's save ended the task; a resumed task with nothing left
        # to run (or a cancelled one) is ended here.
        task = self.known if self.known is not None else await self._load()
        if not task.state.is_final:
            task = await self._update(self._end())
        return task.state

    def _end(self) -> Callable[[Task], None]:
        actor = self.ctx.actor

        def change(task: Task) -> None:
            if not task.finish_if_done(actor) and not task.state.is_final:
                cancelled = task.cancel_requested or self.cancel.is_set()
                task.finish(task_outcome([r.state for r in task.runs.values()], cancelled), actor)

        return change

    async def _run_step(self, step: Step, failed_before: bool) -> StepState:
        if not should_run(step.condition, failed_before):
            return await self._finish_step(
                step.name, StepState.SKIPPED, reason=skip_reason(step.condition)
            )
        environment = self.known.environment_name if self.known is not None else None
        out_of_scope = scope_skip_reason(step.environments, environment)
        if out_of_scope is not None:
            return await self._finish_step(step.name, StepState.SKIPPED, reason=out_of_scope)
        try:
            if step.action is Action.SCRIPT and step.on_behalf_of_roles:
                return await run_on_behalf(self, step)
            if step.action is Action.SCRIPT:
                return await self.script(Execution.of(step))
            if step.action is Action.MANUAL_INTERVENTION:
                return await run_intervention(self, step)
            if step.action is Action.EMAIL:
                return await send_email_step(self, step)
            return await import_certificate(self, step)
        except InvalidTransition as exc:
            log.info("step changed under us", extra={"task_id": str(self.task_id), "error": str(exc)})
            return (await self._load()).run_of(step.name).state
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("step failed inside the server", extra={"task_id": str(self.task_id)})
            return await self._finish_step(
                step.name, StepState.FAILED, reason=f"internal error: {type(exc).__name__}: {exc}"
            )

    # -- script steps: where, then run -----------------------------------------------------

    def _route_and_assign(self, execution: Execution, turn: int) -> tuple[Route, str, str | None]:
        """Decide where the execution runs and record the assignment, all in one trip to
        a thread. Returns (decision, pool name, run-as user)."""
        decision, pool_name, run_as_user = self.router.decide(execution, turn)
        if isinstance(decision, RunOnBuiltIn | RunOnWorker):
            self._update_sync(lambda t: self._assign(t, execution.key, decision))
        if isinstance(decision, RunOnWorker):
            self.ctx.hub.count(decision.worker_id, +1)  # undone when the step leaves it
        return decision, pool_name, run_as_user

    def _assign(self, task: Task, key: str, decision: Route) -> None:
        if isinstance(decision, RunOnBuiltIn):
            task.assign(key, decision.pool_id, None, BUILT_IN_WORKER_NAME, self.ctx.actor)
        elif isinstance(decision, RunOnWorker):
            task.assign(key, decision.pool_id, decision.worker_id, decision.worker_name,
                        self.ctx.actor)

    async def script(self, execution: Execution) -> StepState:
        """Run one execution of a script step: route it, wait for a worker if need be,
        run it there; its end state."""
        key = execution.key
        claimed = self._take_claimed_route(key)
        if claimed is not None:
            # Routed and assigned with the claim: run it there.
            outcome = await self._run_routed(execution, *claimed, ())
            if outcome is not None:
                return outcome
        elif self.known is not None:
            known = self.known.run_of(key)
            if known.state.is_final:
                return known.state  # resumed: this execution ended before the restart
            if known.worker_id is not None and known.assignment is not None \
                    and known.state in (StepState.ASSIGNED, StepState.RUNNING):
                # Resumed after a restart: the worker still has it; its reports will come.
                outcome = await self._on_worker_resumed(
                    execution, known.worker_id, known.assignment
                )
                if outcome is not None:
                    return outcome
        return await self._route_and_run(execution)

    def _take_claimed_route(self, key: str) -> tuple[Route, str, str | None] | None:
        claimed = self._claimed_route
        if claimed is None or claimed[0] != key:
            return None
        self._claimed_route = None
        return claimed[1:]

    async def _run_routed(
        self, execution: Execution, decision: Route, pool_name: str, run_as_user: str | None,
        packages: tuple[PackageRef, ...],
    ) -> StepState | None:
        """Run an execution assigned to the built-in worker or a worker; None when the
        worker could not take it (route it again)."""
        if isinstance(decision, RunOnBuiltIn):
            return await self._on_built_in(execution, pool_name, run_as_user, packages)
        assert isinstance(decision, RunOnWorker)
        return await self._on_worker(execution, decision, pool_name, packages)

    async def _route_and_run(self, execution: Execution) -> StepState:
        key = execution.key
        deadline = asyncio.get_running_loop().time() + self.ctx.wait_limit_s
        try:
            packages = await resolve_packages(self.ctx.app, execution.step)
        except UnknownPackage as exc:
            return await self._finish_step(key, StepState.FAILED, reason=str(exc))
        turn = 0
        while True:
            decision, pool_name, run_as_user = await asyncio.to_thread(
                self._route_and_assign, execution, turn
            )
            turn += 1
            if isinstance(decision, Refuse):
                return await self._finish_step(key, StepState.FAILED, reason=decision.reason)
            if isinstance(decision, RunOnBuiltIn | RunOnWorker):
                outcome = await self._run_routed(
                    execution, decision, pool_name, run_as_user, packages
                )
                if outcome is not None:
                    return outcome
                continue  # the worker could not take it: choose again
            await self._update(self._waiting(key, decision.reason))
            if asyncio.get_running_loop().time() >= deadline:
                return await self._finish_step(
                    key, StepState.FAILED,
                    reason=f"no worker became available in pool {pool_name!r} within "
                    f"{self.ctx.wait_limit_s:g}s",
                )
            if await self._wait_for_change(2.0):
                return await self._finish_step(key, StepState.CANCELLED, reason="cancelled")

    def _waiting(self, step: str, reason: str) -> Callable[[Task], None]:
        return lambda task: task.wait_for_worker(step, reason, self.ctx.actor)

    async def _wait_for_change(self, timeout: float) -> bool:
        """Sleep until something is written (or ``timeout``); True when cancelled."""
        if self.cancel.is_set():
            return True
        watch = self.ctx.watch
        waiter = asyncio.create_task(watch.wait_async(watch.position + 1, timeout))
        cancel = asyncio.create_task(self.cancel.wait())
        try:
            await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, cancel):
                t.cancel()
        return self.cancel.is_set()

    async def _on_built_in(
        self, execution: Execution, pool_name: str, run_as_user: str | None,
        packages: tuple[PackageRef, ...],
    ) -> StepState:
        request = step_request(
            self, execution, BUILT_IN_WORKER_NAME, pool_name, packages, run_as_user
        )
        artifacts = built_in_artifacts(
            self.ctx.app, self.ctx.artifacts, self.task_id, execution.key, self.ctx.actor
        )
        return await run_on_server(self, request, self.ctx.executor, artifacts)

    # -- script steps on external workers -----------------------------------------------

    async def _on_worker(
        self, execution: Execution, decision: RunOnWorker, pool_name: str,
        packages: tuple[PackageRef, ...],
    ) -> StepState | None:
        try:
            if await self._is_ssh(decision.worker_id):
                return await run_on_ssh(self, execution, decision, pool_name, packages)
            worker = ExternalStep(
                self, execution, decision.worker_id, decision.worker_name, pool_name, packages,
                decision.capacity,
            )
            return await worker.run()
        finally:
            self.ctx.hub.count(decision.worker_id, -1)

    async def _is_ssh(self, worker_id: UUID) -> bool:
        try:
            return await self.ctx.hub.comms_style(worker_id) is CommsStyle.SSH
        except NotFound:
            return False  # ExternalStep gives the step back

    async def _on_worker_resumed(
        self, execution: Execution, worker_id: UUID, assignment: int
    ) -> StepState | None:
        name = self.known.run_of(execution.key).worker_name if self.known is not None else None
        worker = ExternalStep(self, execution, worker_id, name or str(worker_id), "")
        return await worker.follow(assignment, None)

def _first_plain_script(task: Task) -> Step | None:
    """The task's first step when it is a script step that will run as soon as the task
    starts, on one worker, with no packages to look up first; else None."""
    step = task.steps[0] if task.steps else None
    if step is None or step.action is not Action.SCRIPT or step.on_behalf_of_roles \
            or step.packages or not should_run(step.condition, False) \
            or scope_skip_reason(step.environments, task.environment_name) is not None:
        return None
    return step


__all__ = ["SERVER_STOPPED", "LogLine", "RunContext", "TaskRun"]
