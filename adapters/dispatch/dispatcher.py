"""The dispatcher: takes queued tasks in order up to this node's task cap and runs them;
after a restart it cleans up what the last run of this node left half-done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection
from typing import Any
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

    def __init__(
        self, ctx: RunContext, *, node: str, task_cap: int, sole_writer: bool = False
    ) -> None:
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
        # Tasks queued through this node that the read model may not show yet, by the log
        # position of their Queued event; kept only when this node is the store's one
        # writer (SQLite), so that every task queued anywhere is either shown or here.
        # Then a task queued on an idle node is taken at once, not after the projector's
        # round trip (about 5 ms, half of a trivial task's whole run).
        self._handed: dict[UUID, int] | None = {} if sole_writer else None
        self._handed_lock = threading.Lock()
        if sole_writer:
            ctx.app.on_recorded(self._recorded)

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

    def _recorded(self, recorded: list[tuple[int, Any]]) -> None:
        # In the saving thread, before the route that queued the task pokes us.
        queued = [(e.originator_id, p) for p, e in recorded if isinstance(e, Task.Queued)]
        if queued and self._handed is not None:
            with self._handed_lock:
                self._handed.update(queued)

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
                    self._not_claimable(run.task_id)
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
        another node meanwhile is simply not claimed. When this node is the only writer,
        the tasks queued here that the read model has not reached follow (queue_order);
        else, with too few, the read model is given a moment to catch up."""
        watch = self.ctx.watch
        for attempt in (1, 2):
            # Claims the read model has reached no longer show as queued.
            self._taken = {t: p for t, p in self._taken.items() if p > watch.position}
            shown = watch.position  # the read below includes at least this much of the log
            limit = max(PREFETCH, wanted) + len(self.runs) + len(self._taken)
            ids = [UUID(raw) for raw in await self._queued(limit)]
            busy = self.runs.keys() | self._taken.keys()
            if self._handed is not None:
                self._queue = deque(
                    queue_order(ids, complete=len(ids) < limit, handed=self._handed_since(shown),
                                busy=busy)
                )
                return  # nothing queued is missing: no reason to wait for the read model
            self._queue = deque(t for t in ids if t not in busy)
            if len(self._queue) >= wanted or attempt == 2:
                return
            # Too few: let the read model catch up with what this node just queued.
            await watch.wait_async(self.ctx.app.last_position, 1.0)

    def _handed_since(self, shown: int) -> dict[UUID, int]:
        """The tasks queued here that the read model had not reached at ``shown``; those
        it had reached it lists, if they are still queued, so they are dropped here."""
        assert self._handed is not None
        with self._handed_lock:
            self._handed = {t: p for t, p in self._handed.items() if p > shown}
            return dict(self._handed)

    def _not_claimable(self, task_id: UUID) -> None:
        # Cancelled before it started: not offered again while the read model lags.
        if self._handed is not None:
            with self._handed_lock:
                self._handed.pop(task_id, None)

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


def queue_order(
    listed: list[UUID], *, complete: bool, handed: dict[UUID, int], busy: Collection[UUID]
) -> list[UUID]:
    """The queued tasks to take, in queue order: those the read model ``listed`` (oldest
    first), then the tasks this node queued that it had not reached (``handed``, by the
    log position of their Queued event), which are newer than all it lists since it
    applies the log in order. The handed ones only when the list is ``complete`` (every
    queued task the read model has): else tasks it has but did not list come first, and
    a later read brings them. None that is ``busy`` (running here, or claimed)."""
    if not complete:
        return [t for t in listed if t not in busy]
    seen = set(listed)
    tail = [t for t, _ in sorted(handed.items(), key=lambda item: item[1]) if t not in seen]
    return [t for t in [*listed, *tail] if t not in busy]
