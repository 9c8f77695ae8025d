"""The dispatcher: takes queued tasks in order up to this node's task cap and runs them;
after a restart it cleans up what the last run of this node left half-done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from uuid import UUID

from adapters.dispatch.orphans import kill_step_processes, remove_leftover_folders
from adapters.dispatch.taskrun import SERVER_STOPPED, RunContext, TaskRun
from domain.errors import NotFound
from domain.plan import StepState
from domain.tasks import Task
from domain.workers import CommsStyle
from projections.tasks import executing_task_ids, queued_task_ids

log = logging.getLogger("shoal.dispatch")

# How many queued tasks the dispatcher reads ahead from the queue's read model.
PREFETCH = 64


class Dispatcher:
    """start() / stop(grace); poke() when a task is queued; cancel() and changed() for
    running tasks."""

    def __init__(self, ctx: RunContext, *, node: str, task_cap: int) -> None:
        self.ctx = ctx
        self.node = node
        self.task_cap = task_cap
        self.runs: dict[UUID, TaskRun] = {}
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self._poke = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The oldest queued tasks as the read model last showed them (see _refill), and
        # the tasks this node claimed, by the log position of the claim.
        self._queue: deque[UUID] = deque()
        self._taken: dict[UUID, int] = {}

    # -- signals from the API ----------------------------------------------------------------

    # These are called from request handlers in worker threads: asyncio objects may only
    # be touched from their loop, and setting an Event from another thread would neither
    # be safe nor wake the loop.

    def _on_loop(self, event: asyncio.Event) -> None:
        if self._loop is None:
            event.set()
        else:
            self._loop.call_soon_threadsafe(event.set)

    def poke(self) -> None:
        """Something was queued (or a slot freed): look at the queue now."""
        self._on_loop(self._poke)

    def cancel(self, task_id: UUID) -> None:
        """Stop a task running on this node (its cancel was recorded already)."""
        run = self.runs.get(task_id)
        if run is not None:
            self._on_loop(run.cancel)

    def changed(self, task_id: UUID, task: Task | None = None) -> None:
        """A running task was changed from outside (a worker's reports, an intervention
        decided): ``task`` is the task as saved, when the caller has it."""
        run = self.runs.get(task_id)
        if run is None:
            return
        if self._loop is None:
            run.offer(task)
        else:
            self._loop.call_soon_threadsafe(run.offer, task)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover this node's unfinished tasks, then follow the queue."""
        self._loop = asyncio.get_running_loop()
        # Nothing runs on this node yet, so any step folder left is from a crash.
        await asyncio.to_thread(remove_leftover_folders, self.ctx.work_root)
        for task_id in await asyncio.to_thread(executing_task_ids, self.ctx.views, self.node):
            await self._recover(UUID(task_id))
        self._loop_task = asyncio.create_task(self._follow(), name="shoal-dispatcher")

    async def _recover(self, task_id: UUID) -> None:
        task: Task = await asyncio.to_thread(self.ctx.app.get_task, task_id)
        for name, run in task.runs.items():
            if run.state not in (StepState.ASSIGNED, StepState.RUNNING) or name in task.executions:
                continue  # a step run per target runs in its executions, each seen here
            if run.worker_id is not None:
                # An agent's step goes on without us (its reports wait in JetStream); an
                # SSH step was this server's to drive, and nobody reads it any more.
                if await asyncio.to_thread(self._is_ssh, run.worker_id):
                    await asyncio.to_thread(self.ctx.app.update_task, task_id, self._stopped(name))
                continue
            if run.pid is not None:
                await asyncio.to_thread(kill_step_processes, run.pid, str(task_id))
            await asyncio.to_thread(self.ctx.app.update_task, task_id, self._stopped(name))
        log.info("resuming task after restart", extra={"task_id": str(task_id)})
        self._spawn(task_id)

    def _is_ssh(self, worker_id: UUID) -> bool:
        try:
            return self.ctx.app.get_worker(worker_id).comms_style is CommsStyle.SSH
        except NotFound:
            return False

    def _stopped(self, step: str) -> Callable[[Task], None]:
        actor = self.ctx.actor
        return lambda task: task.finish_step(step, StepState.FAILED, None, SERVER_STOPPED, actor)

    def _spawn(self, task_id: UUID, task: Task | None = None, claim: bool = False) -> None:
        run = TaskRun(self.ctx, task_id)
        self.runs[task_id] = run
        self._tasks[task_id] = asyncio.create_task(self._run(run, task, claim), name=f"task-{task_id}")

    async def _run(self, run: TaskRun, task: Task | None, claim: bool = False) -> None:
        try:
            if claim:
                # Claimed inside the run, so the claims of a burst are saved concurrently
                # (and grouped into few commits) rather than one after another.
                task = await asyncio.to_thread(run.claim, self.node)
                if task is None:
                    return
                # The read model lists it as queued until it reaches the claim.
                self._taken[run.task_id] = run.claimed_at
            state = await run.run(task)
            log.info("task finished", extra={"task_id": str(run.task_id), "state": state.value})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task run failed", extra={"task_id": str(run.task_id)})
        finally:
            self.runs.pop(run.task_id, None)
            self._tasks.pop(run.task_id, None)
            self.poke()

    async def _follow(self) -> None:
        while not self._stopping:
            # Cleared before looking, so a poke that arrives while we look is not lost.
            self._poke.clear()
            try:
                await self._take_queued()
            except Exception:
                log.exception("could not read the task queue; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=1.0)

    async def _take_queued(self) -> None:
        free = self.task_cap - len(self.runs)
        if free <= 0:
            return
        if len(self._queue) < free:
            await self._refill(free)
        while free > 0 and self._queue:
            task_id = self._queue.popleft()
            if task_id not in self.runs:
                self._spawn(task_id, claim=True)
                free -= 1

    async def _refill(self, wanted: int) -> None:
        """Read the oldest queued tasks (a read model) into ``_queue``, in queue order.

        Up to PREFETCH of them: a busy node takes the next task from these as each slot
        frees, rather than asking the read model once per task. They stay a prefix of the
        true queue order: the read model applies the log in order, so a task it has not
        shown yet was queued after every task it has. One that was cancelled or taken by
        another node meanwhile is simply not claimed."""
        watch = self.ctx.watch
        for attempt in (1, 2):
            # Claims the read model has reached no longer show as queued.
            self._taken = {t: p for t, p in self._taken.items() if p > watch.position}
            limit = max(PREFETCH, wanted) + len(self.runs) + len(self._taken)
            ids = [UUID(raw) for raw in await self._queued(limit)]
            self._queue = deque(t for t in ids if t not in self.runs and t not in self._taken)
            if len(self._queue) >= wanted or attempt == 2:
                return
            # Too few: let the read model catch up with what this node just queued.
            await watch.wait_async(self.ctx.app.last_position, 1.0)

    async def _queued(self, limit: int) -> list[str]:
        return await asyncio.to_thread(queued_task_ids, self.ctx.views, limit)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking tasks; stop running steps (recorded as stopped); wait for that."""
        self._stopping = True
        self._poke.set()
        if self._loop_task is not None:
            await self._loop_task
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel("server stopping")
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
