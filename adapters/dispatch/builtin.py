"""The built-in worker, seen from the server: a long-lived child process (agent/builtin.py)
that runs the built-in steps, driven over a pipe (agent/pipe.py).

:class:`BuiltInWorkerProcess` has the step executor's ``run()`` shape, so the task run does
not care that the step runs in another process. It

* starts the process (``start``: spawned, then waits for ``ready``) and ends it
  (``stop``: end of file on its stdin makes it abort what still runs and exit);
* sends each step as a ``run`` frame and handles that step's frames in order, in the
  step's own coroutine (the pipe's reader only sorts frames into per-step queues), so a
  slow log write of one step never holds up another;
* when its ``run()`` is cancelled, or a callback raises, aborts the step in the process and
  waits until the process confirms it (processes killed, folder removed);
* fetches packages from the object store for the process's package cache;
* when the process dies, fails the steps it was running (naming the process and how it
  ended), kills what they left running, removes their folders, and starts a new process.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.dispatch.builtinchild import GONE, Child, Run
from adapters.dispatch.orphans import kill_step_processes
from agent.leftovers import clean_work_root
from agent.pipe import MalformedFrame, lines_from_wire, moment, number, result_from_wire
from agent.ports import (
    ArtifactSink,
    LogSink,
    PackageSource,
    StartedCallback,
    StepRequest,
    StepResult,
)
from agent.steplog import system_line

log = logging.getLogger("shoal.builtin")

STOPPED = "the built-in worker process was stopped during the step"
# After an abort the process kills the step's group and waits for it (up to 5 s), then
# removes its folder.
ABORT_WAIT_S = 15.0


class BuiltInWorkerError(Exception):
    """The built-in worker process cannot run a step, or failed one for a reason of its
    own rather than the step's (the message says which)."""


@dataclass(frozen=True)
class BuiltInWorkerConfig:
    """How to start the built-in worker process.

    ``work_root``: where its steps' folders are (cleaned after it dies); ``packages_root``:
    its package cache; ``inbox``: where it puts returned artifacts for the server.
    """

    work_root: Path
    packages_root: Path
    inbox: Path
    python: str = sys.executable
    kill_grace: float = 2.0
    flush_interval: float = 0.1
    flush_lines: int = 1000
    ready_timeout: float = 30.0

    def command(self) -> list[str]:
        """The process's command line."""
        return [
            self.python, "-m", "agent.builtin",
            "--packages", str(self.packages_root.absolute()), "--inbox", str(self.inbox.absolute()),
            "--kill-grace", repr(self.kill_grace), "--flush-interval", repr(self.flush_interval),
            "--flush-lines", str(self.flush_lines),
            # It logs as much as the server does (its lines go to the server's stderr).
            "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        ]


class BuiltInWorkerProcess:
    """The server's handle on the built-in worker process (see the module docstring)."""

    def __init__(self, config: BuiltInWorkerConfig, packages: PackageSource | None = None) -> None:
        self.config = config
        self._packages = packages
        self._child: Child | None = None
        # Held while a process is started or a dead one cleaned up after: a new process
        # must never start before the old one's leftovers are gone (the clean-up kills
        # step processes by their work folder).
        self._lock = asyncio.Lock()
        self._stopping = False
        self._inbox_cleaned = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The live process's pid, if one runs."""
        child = self._child
        return child.pid if child is not None and not child.gone.done() else None

    async def start(self) -> None:
        """Start the process and wait until it is ready; BuiltInWorkerError when it cannot."""
        self._stopping = False
        await self._running()

    async def stop(self, grace: float = 10.0) -> None:
        """End the process: it aborts the steps still running and exits; killed after
        ``grace`` seconds. Steps still running end failed."""
        self._stopping = True
        async with self._lock:
            child, self._child = self._child, None
            if child is not None:
                if not child.gone.done():
                    child.closing = True
                    child.close_stdin()
                    done, _ = await asyncio.wait({child.gone}, timeout=grace)
                    if not done:
                        log.warning("the built-in worker process did not exit; killing it",
                                    extra={"pid": child.pid})
                        child.kill()
                        await asyncio.wait({child.gone}, timeout=5.0)
                await self._bury(child)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def run(
        self,
        request: StepRequest,
        sink: LogSink,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
        on_artifact: ArtifactSink | None = None,
    ) -> StepResult:
        """Run one step in the process; the same contract as StepExecutor.run. When the
        process cannot be started or dies, the step ends failed, saying so."""
        if cancel is not None and cancel.is_set():
            await sink([system_line("cancelled")])
            return StepResult("cancelled", None, "cancelled")
        try:
            child = await self._running()
        except BuiltInWorkerError as exc:
            return await _failed(sink, str(exc))
        run = child.begin(request, on_artifact is not None)
        watcher = None if cancel is None else asyncio.create_task(_cancel_when(cancel, child, run))
        try:
            return await _follow(child, run, sink, on_started, on_artifact)
        except BaseException:
            await _abort(child, run)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            child.end(run)

    # -- the process's life ------------------------------------------------------------------

    async def _running(self) -> Child:
        child = self._child
        if child is not None and not child.gone.done():
            return child  # the usual case: no lock to take
        async with self._lock:
            if self._stopping:
                raise BuiltInWorkerError("the built-in worker process is stopping")
            child = self._child
            if child is not None and child.gone.done():
                await self._bury(child)
                child = None
            if child is None:
                self._child = child = await self._spawn()
            return child

    async def _spawn(self) -> Child:
        if not self._inbox_cleaned:
            # Artifacts a crashed server never took; no process runs yet to add any.
            await asyncio.to_thread(shutil.rmtree, self.config.inbox, True)
            self._inbox_cleaned = True
        loop = asyncio.get_running_loop()
        child = Child(self.config, self._packages, loop)
        try:
            await loop.subprocess_exec(
                lambda: child, *self.config.command(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            )
        except OSError as exc:
            raise BuiltInWorkerError(f"the built-in worker process could not start: {exc}") from None
        try:
            done, _ = await asyncio.wait({child.ready, child.gone}, timeout=self.config.ready_timeout,
                                        return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled while it boots (the server is stopping): nobody would ever end it.
            await child.end_now()
            raise
        if child.ready not in done or child.ready.exception() is not None:
            if child.ready.done():
                why = str(child.ready.exception())
            elif child.gone.done():
                why = f"it ended before it was ready ({child.status()})"
            else:
                why = f"it was not ready within {self.config.ready_timeout:g}s"
            await child.end_now()
            raise BuiltInWorkerError(f"the built-in worker process could not start: {why}")
        child.gone.add_done_callback(lambda _: self._spawn_task(self._after_death(child)))
        log.info("built-in worker process started", extra={"pid": child.pid})
        return child

    async def _after_death(self, child: Child) -> None:
        """Clean up after a process that ended, and start another unless stopping."""
        async with self._lock:
            await self._bury(child)
            if self._stopping or self._child is not None or child.closing:
                return
            try:
                self._child = await self._spawn()
            except BuiltInWorkerError as exc:
                # Not retried here (no crash loop): the next step tries, and fails saying so.
                log.error("could not start the built-in worker process again", extra={"error": str(exc)})

    async def _bury(self, child: Child) -> None:
        """Kill what the process's steps left, remove their folders, end their runs."""
        if child.buried:
            return
        child.buried = True
        if self._child is child:
            self._child = None
        unexpected = not child.closing
        reason = (f"the built-in worker process (pid {child.pid}) ended unexpectedly: {child.status()}"
                  if unexpected else STOPPED)
        runs = list(child.runs.values())
        if unexpected:
            log.error("the built-in worker process ended unexpectedly",
                      extra={"pid": child.pid, "status": child.status(), "steps": len(runs)})
        if runs or unexpected:
            groups = [(run.pid, run.task_id) for run in runs if run.pid is not None]
            await asyncio.to_thread(_clean_up, groups, self.config.work_root)
        child.cancel_fetches()
        child.gone_reason = reason
        for run in runs:
            run.put({"op": GONE, "reason": reason})
            run.end()
        child.close()

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _clean_up(groups: list[tuple[int, str]], work_root: Path) -> None:
    """What a dead process's steps left: their process groups (by pid and task), then any
    process still working in a step folder, then the folders."""
    for pgid, task_id in groups:
        kill_step_processes(pgid, task_id)
    clean_work_root(work_root)


# -- one step ----------------------------------------------------------------------------------


async def _follow(
    child: Child, run: Run, sink: LogSink, on_started: StartedCallback | None,
    on_artifact: ArtifactSink | None,
) -> StepResult:
    """Handle the step's frames, in order, until it ends."""
    while True:
        frame = await run.frames.get()
        op = frame["op"]
        try:
            if op == "log":
                await sink(lines_from_wire(frame.get("lines")))
                child.answer(frame)
            elif op == "started":
                if on_started is not None:
                    await on_started(number(frame, "pid"), moment(frame, "at"))
            elif op == "artifact":
                await child.artifact(frame, on_artifact)
            elif op == "finished":
                return result_from_wire(frame)
            elif op == "error":
                raise BuiltInWorkerError(str(frame.get("error")))
            elif op == "aborted":  # not asked for: the process is stopping
                return await _failed(sink, STOPPED)
            elif op == GONE:
                return await _failed(sink, str(frame["reason"]))
        except MalformedFrame as exc:
            raise BuiltInWorkerError(f"the built-in worker process sent a malformed frame: {exc}") from None


async def _failed(sink: LogSink, reason: str) -> StepResult:
    await sink([system_line(reason)])
    return StepResult("failed", None, reason)


async def _cancel_when(cancel: asyncio.Event, child: Child, run: Run) -> None:
    await cancel.wait()
    if not run.ended.done():
        child.send({"op": "cancel", "id": run.id})


async def _abort(child: Child, run: Run) -> None:
    """Have the process kill the step at once, and wait until it says it has."""
    if run.ended.done() or child.gone.done():
        return
    child.send({"op": "abort", "id": run.id})
    done, _ = await asyncio.wait({run.ended, child.gone}, timeout=ABORT_WAIT_S,
                                return_when=asyncio.FIRST_COMPLETED)
    if not done:
        log.warning("the built-in worker process did not confirm an abort",
                    extra={"pid": child.pid, "task_id": run.task_id})

