"""The step executor: runs one script step as a local child process.

The built-in worker (a child process of the server) and external agents run every script
step through :class:`StepExecutor`. For each step it

* makes a fresh working folder (mode 0700, owned by the step's user) and removes it
  afterwards, whatever happened (agent/folders.py);
* runs the script in a clean environment (none of the server's variables, so no secrets
  leak; agent/launch.py) in a process group of its own, so that a timeout or a cancel stops
  everything the script started, and nothing of the group outlives the step;
* reads stdout and stderr as they come, cuts over-long lines, caps the log's size, and hands
  the lines to a sink in batches (agent/steplog.py);
* puts the step's packages into the folder first (agent/packages.py) and gives the script
  ``shoal-artifact``; the files it returned go to an artifact sink after the process ended
  (agent/artifacts.py).

The process is started directly (agent/spawn.py), not through asyncio's subprocess
transport: its start is the moment fork and exec return, its output arrives as callbacks in
the order it was read across both pipes, with no task per stream, and the executor can stop
reading pipes that a process which escaped the group still holds open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from agent import artifacts
from agent.folders import Refused, make_folder, remove_small, remove_tree
from agent.launch import DEFAULT_PATH, command, credentials, environment, resolve_user
from agent.packages import PackageCache, PackageError, place_all
from agent.ports import (
    ArtifactSink,
    LogLine,
    LogSink,
    StartedCallback,
    StepRequest,
    StepResult,
    StepRunner,
)
from agent.spawn import StepProcess
from agent.steplog import Batcher, StepLog, system_line

__all__ = ["DEFAULT_PATH", "LogLine", "LogSink", "StepExecutor", "StepRequest", "StepResult", "StepRunner"]

log = logging.getLogger(__name__)

# How often to look whether a killed group is gone. Only the kill path polls: the kernel
# gives no notice when the last member of a process group (not our child) is reaped.
_GROUP_POLL_S = 0.02
# After SIGKILL: orphaned members are reaped by init, which on some machines (containers,
# micro-VMs) takes a second or two; the group id stays taken until then.
_REAP_WAIT_S = 5.0

Ending = Literal["exited", "timed_out", "cancelled"]


class StepExecutor:
    """Runs script steps as local child processes (see the module docstring).

    ``flush_interval`` / ``flush_lines``: a batch goes to the sink once it holds
    ``flush_lines`` lines (the most a batch ever holds) or ``flush_interval`` seconds after
    its first line was read, whichever comes first, and whatever is left when the step ends.
    ``kill_grace``: seconds between SIGTERM and SIGKILL when the step's processes are
    stopped; also how long to wait for the pipes to close after the process exited.
    ``packages``: where package files come from (a step that lists packages fails without).
    """

    def __init__(
        self, *, flush_interval: float = 0.1, flush_lines: int = 1000, kill_grace: float = 2.0,
        packages: PackageCache | None = None,
    ) -> None:
        if flush_interval < 0 or flush_lines < 1 or kill_grace < 0:
            raise ValueError("flush_interval and kill_grace must be >= 0 and flush_lines >= 1")
        self._flush_interval = flush_interval
        self._flush_lines = flush_lines
        self._kill_grace = kill_grace
        self._packages = packages
        # Strong references to the helper tasks of running steps (the loop keeps only weak ones).
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        request: StepRequest,
        sink: LogSink,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
        on_artifact: ArtifactSink | None = None,
    ) -> StepResult:
        """Run one step and return how it ended, once its log has been delivered.

        ``on_started(pid)`` is awaited right after the process starts (pid == its process
        group id), and before any log batch goes to ``sink``. Setting ``cancel`` stops the
        step (outcome "cancelled"). When this coroutine itself is cancelled, or ``sink`` or
        ``on_started`` raises, the process group is killed at once, the folder removed, and
        the exception propagates (lines not yet delivered are lost). Unless the step was
        cancelled, the files it returned go to ``on_artifact`` after its process ended; one
        that could not be returned fails a step that otherwise succeeded.
        """
        if cancel is not None and cancel.is_set():
            await sink([system_line("cancelled")])
            return StepResult("cancelled", None, "cancelled")
        try:
            user = resolve_user(request.run_as_user) if request.run_as_user is not None else None
            folder = make_folder(request, user)
        except Refused as exc:
            await sink([system_line(str(exc))])
            return StepResult("failed", None, str(exc))
        try:
            owner = None if user is None else (user.pw_uid, user.pw_gid)
            tools_env = artifacts.prepare(folder, owner)
            refused = await self._place_packages(request, folder, owner, sink)
            if refused is not None:
                result = refused
            else:
                result = await self._run_in(folder, request, user, sink, cancel, on_started, tools_env)
                if on_artifact is not None and result.outcome != "cancelled":
                    result = await self._return_artifacts(folder, request, sink, on_artifact, result)
        except BaseException:
            # Synchronously: we may be being cancelled, and the folder must go regardless.
            remove_tree(folder)
            raise
        # What most steps leave (their script) goes at once: less than the hop to a thread.
        # A larger tree is removed in a thread, so that it never stalls the event loop.
        if not remove_small(folder):
            await asyncio.to_thread(remove_tree, folder)
        return result

    async def _place_packages(
        self, request: StepRequest, folder: Path, owner: tuple[int, int] | None, sink: LogSink
    ) -> StepResult | None:
        """Place the step's packages; a failed step's result if one cannot be, else None."""
        if not request.packages:
            return None
        placed: list[str] = []
        try:
            await place_all(self._packages, request.packages, folder, owner, placed)
        except PackageError as exc:
            await sink([system_line(text) for text in (*placed, str(exc))])
            return StepResult("failed", None, str(exc))
        await sink([system_line(text) for text in placed])
        return None

    async def _return_artifacts(
        self, folder: Path, request: StepRequest, sink: LogSink, on_artifact: ArtifactSink,
        result: StepResult,
    ) -> StepResult:
        async def note(text: str) -> None:
            await sink([system_line(text)])

        problems = await artifacts.collect(folder, request.work_root.absolute(), on_artifact, note)
        if problems and result.outcome == "success":
            return StepResult("failed", result.exit_code, "; ".join(problems))
        return result

    async def _run_in(
        self,
        folder: Path,
        request: StepRequest,
        user: pwd.struct_passwd | None,
        sink: LogSink,
        cancel: asyncio.Event | None,
        on_started: StartedCallback | None,
        tools_env: dict[str, str],
    ) -> StepResult:
        loop = asyncio.get_running_loop()
        env = environment(request, folder, user, tools_env)
        batcher = Batcher(sink, self._flush_interval, self._flush_lines)
        steplog = StepLog(batcher, request.max_line_bytes, request.max_log_bytes)
        try:
            process = await StepProcess.start(
                command(request.syntax, env["PATH"]), steplog, cwd=folder, env=env,
                **credentials(user),
            )
        except OSError as exc:
            reason = f"could not start the step: {exc}"
            await sink([system_line(reason)])
            return StepResult("failed", None, reason)
        deadline = None if request.timeout_s is None else loop.time() + request.timeout_s
        pgid = process.pid
        flusher: asyncio.Task[None] | None = None
        try:
            if on_started is not None:
                await on_started(pgid, process.started_at)
            flusher = self._spawn(batcher.run())
            ending = await self._supervise(pgid, process, steplog, flusher, deadline, request, cancel)
            if not process.output_closed.done():
                # The pipes close soon after the exit (unless something escaped the group
                # holds them); the flusher ends early only by failing.
                await asyncio.wait({process.output_closed, flusher}, timeout=self._kill_grace,
                                   return_when=asyncio.FIRST_COMPLETED)
                _raise_if_failed(flusher)
                if not process.output_closed.done():
                    steplog.system(
                        "stopped reading output: a process that left the step's process group "
                        "still holds it open"
                    )
            steplog.close()
            batcher.close()
            await flusher
        except BaseException:
            _signal_group(pgid, signal.SIGKILL)
            if flusher is not None:
                flusher.cancel()
            # Let the watcher reap it (SIGKILL makes that quick) while the loop still runs;
            # a loop closed first leaves a Popen that warns it is "still running".
            await asyncio.wait({process.exited}, timeout=_REAP_WAIT_S)
            raise
        finally:
            process.close()
        return _result(ending, process.returncode, request.timeout_s)

    async def _supervise(
        self,
        pgid: int,
        process: StepProcess,
        steplog: StepLog,
        flusher: asyncio.Task[None],
        deadline: float | None,
        request: StepRequest,
        cancel: asyncio.Event | None,
    ) -> Ending:
        """Wait for the process to exit, the deadline, or a cancel; then make sure that
        nothing of the process group is left."""
        waits: set[asyncio.Future[Any]] = {process.exited, flusher}
        cancelled: asyncio.Task[Any] | None = None
        if cancel is not None:
            cancelled = self._spawn(cancel.wait())
            waits.add(cancelled)
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if cancelled is not None:
                cancelled.cancel()
        _raise_if_failed(flusher)
        ending: Ending
        if process.exited in done:
            ending = "exited"
            if _group_exists(pgid):
                steplog.system("the step left processes running; stopping them")
        elif cancelled is not None and cancelled in done:
            ending = "cancelled"
            steplog.system("cancelled")
        else:
            ending = "timed_out"
            steplog.system(f"timed out after {_seconds(request.timeout_s)}s; killed")
        await self._stop_group(pgid, process.exited)
        return ending

    async def _stop_group(self, pgid: int, exited: asyncio.Future[None]) -> None:
        """SIGTERM the group, SIGKILL what is left after the grace, and wait until it is gone."""
        if not _signal_group(pgid, signal.SIGTERM):
            return  # the usual case after a clean exit: nothing left
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_grace
        await asyncio.wait({exited}, timeout=self._kill_grace)
        if await _wait_group_gone(pgid, deadline - loop.time()):
            return
        if _signal_group(pgid, signal.SIGKILL):
            await asyncio.wait({exited}, timeout=_REAP_WAIT_S)
            if not await _wait_group_gone(pgid, _REAP_WAIT_S):
                log.warning("process group %d still exists %.0fs after SIGKILL", pgid, _REAP_WAIT_S)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))
        return task


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            # Marks the exception retrieved: whoever awaited the step has seen it already,
            # or the step was torn down for another reason that is being raised instead.
            task.exception()

    return done


def _raise_if_failed(task: asyncio.Task[Any]) -> None:
    if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
        raise exc


# -- process group ---------------------------------------------------------------------------


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only a member that changed its credentials (setuid) can refuse us; nothing more
        # we can do about it from here.
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def _group_exists(pgid: int) -> bool:
    return _signal_group(pgid, 0)


async def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the group to disappear; True if it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _group_exists(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_S)
    return True


def _result(ending: Ending, returncode: int | None, timeout_s: float | None) -> StepResult:
    exit_code = returncode if returncode is not None and returncode >= 0 else None
    if ending == "timed_out":
        return StepResult("timed_out", exit_code, f"timed out after {_seconds(timeout_s)}s")
    if ending == "cancelled":
        return StepResult("cancelled", exit_code, "cancelled")
    if returncode == 0:
        return StepResult("success", 0, "")
    if returncode is None:
        return StepResult("failed", None, "the process did not exit after SIGKILL")
    if returncode > 0:
        return StepResult("failed", returncode, f"exit code {returncode}")
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return StepResult("failed", None, f"killed by signal {name}")


def _seconds(value: float | None) -> str:
    return f"{value:.10g}"


def prefer_pidfd_child_watcher() -> bool:
    """On Python 3.11, let asyncio learn of step exits through a pidfd instead of a
    thread per child (that thread costs ~10% of a trivial step). Later Pythons already
    do this and deprecate child watchers, so this does nothing there, nor on a loop that
    is not asyncio's own. Call it once, from inside the running loop of the process that
    runs steps. True when installed."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    if not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
        return False  # another loop (uvloop) watches its children itself
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # the kernel has no pidfd (before Linux 5.3)
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(asyncio.get_running_loop())
    return True
