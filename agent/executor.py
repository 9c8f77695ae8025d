"""The step executor: runs one script step as a local child process.

The built-in worker (a child process of the server) and external agents run every script
step through :class:`StepExecutor`. For each step it

* makes a fresh working folder (mode 0700, owned by the step's user) and removes it
  afterwards, whatever happened;
* runs the script in a clean environment (none of the server's variables, so no secrets
  leak) in a process group of its own, so that a timeout or a cancel stops everything the
  script started, and nothing of the group outlives the step;
* reads stdout and stderr as they come, cuts over-long lines, caps the log's size, and hands
  the lines to a sink in batches;
* puts the step's packages into the folder first (agent/packages.py) and gives the script
  ``shoal-artifact``; the files it returned go to an artifact sink after the process ended
  (agent/artifacts.py).

The process is driven through a :class:`asyncio.SubprocessProtocol` rather than stream
readers: output arrives as callbacks, in the order it was read across both pipes, with no
task per stream, and the executor owns the transport, so it can stop reading pipes that a
process which escaped the group still holds open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agent import artifacts
from agent.packages import PackageCache, PackageError, place_all
from agent.ports import (
    ArtifactSink,
    LogLine,
    LogSink,
    StartedCallback,
    StepRequest,
    StepResult,
    StepRunner,
    Stream,
)

__all__ = ["DEFAULT_PATH", "LogLine", "LogSink", "StepExecutor", "StepRequest", "StepResult", "StepRunner"]

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_STDOUT, _STDERR = 1, 2
_SCRIPT_FILES = {"bash": "script.sh", "sh": "script.sh", "python": "script.py"}
# How often to look whether a killed group is gone. Only the kill path polls: the kernel
# gives no notice when the last member of a process group (not our child) is reaped.
_GROUP_POLL_S = 0.02
# After SIGKILL: orphaned members are reaped by init, which on some machines (containers,
# micro-VMs) takes a second or two; the group id stays taken until then.
_REAP_WAIT_S = 5.0

Ending = Literal["exited", "timed_out", "cancelled"]


class _Refused(Exception):
    """The step cannot run as asked; the message says why (it goes to the task log)."""


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
            await sink([_system_line("cancelled")])
            return StepResult("cancelled", None, "cancelled")
        try:
            user = _resolve_user(request.run_as_user) if request.run_as_user is not None else None
            folder = _make_folder(request, user)
        except _Refused as exc:
            await sink([_system_line(str(exc))])
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
            _remove_tree(folder)
            raise
        # A step may leave a large tree behind; removing it must not stall the event loop.
        await asyncio.to_thread(_remove_tree, folder)
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
            await sink([_system_line(text) for text in (*placed, str(exc))])
            return StepResult("failed", None, str(exc))
        await sink([_system_line(text) for text in placed])
        return None

    async def _return_artifacts(
        self, folder: Path, request: StepRequest, sink: LogSink, on_artifact: ArtifactSink,
        result: StepResult,
    ) -> StepResult:
        async def note(text: str) -> None:
            await sink([_system_line(text)])

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
        env = _environment(request, folder, user, tools_env)
        batcher = _Batcher(sink, self._flush_interval, self._flush_lines)
        steplog = _StepLog(batcher, request.max_line_bytes, request.max_log_bytes)
        process = _StepProcess(steplog, loop)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: process,
                *_command(request.syntax, env["PATH"]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=folder,
                env=env,
                start_new_session=True,
                **_credentials(user),
            )
        except OSError as exc:
            reason = f"could not start the step: {exc}"
            await sink([_system_line(reason)])
            return StepResult("failed", None, reason)
        deadline = None if request.timeout_s is None else loop.time() + request.timeout_s
        pgid = transport.get_pid()
        flusher: asyncio.Task[None] | None = None
        try:
            if on_started is not None:
                await on_started(pgid)
            flusher = self._spawn(batcher.run())
            ending = await self._supervise(pgid, process, steplog, flusher, deadline, request, cancel)
            if not process.output_closed.done():
                await asyncio.wait({process.output_closed, flusher}, timeout=self._kill_grace)
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
            transport.close()
        return _result(ending, transport.get_returncode(), request.timeout_s)

    async def _supervise(
        self,
        pgid: int,
        process: _StepProcess,
        steplog: _StepLog,
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


# -- output ----------------------------------------------------------------------------------


class _Batcher:
    """Hands lines to the sink in batches; exactly one task (``run``) calls the sink, so at
    most one batch is in flight, and lines read meanwhile wait for the next batch."""

    def __init__(self, sink: LogSink, interval: float, max_lines: int) -> None:
        self._sink = sink
        self._interval = interval
        self._max = max_lines
        self._loop = asyncio.get_running_loop()
        self._pending: list[LogLine] = []
        self._first_at = 0.0
        self._waiting = asyncio.Event()  # lines are pending, or the log is closing
        self._due = asyncio.Event()  # a full batch is pending, or the log is closing
        self._closing = False

    def add(self, lines: list[LogLine]) -> None:
        """Queue lines (called from protocol callbacks, never blocks)."""
        if not self._pending:
            self._first_at = self._loop.time()
            self._waiting.set()
        self._pending.extend(lines)
        if len(self._pending) >= self._max:
            self._due.set()

    def close(self) -> None:
        """No more lines will come: deliver the rest now, then let ``run`` return."""
        self._closing = True
        self._waiting.set()
        self._due.set()

    async def run(self) -> None:
        """Deliver batches until closed and empty."""
        while True:
            await self._waiting.wait()
            if not self._due.is_set():
                delay = self._first_at + self._interval - self._loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._due.wait()
            batch = self._pending[: self._max]
            del self._pending[: self._max]
            if not self._closing:
                # Lines left over after a full batch keep their (past) first_at and so go
                # out at once; that only happens while output floods in.
                if not self._pending:
                    self._waiting.clear()
                if len(self._pending) < self._max:
                    self._due.clear()
            if batch:
                await self._sink(batch)
            elif self._closing:
                return


class _LineBuffer:
    """The unfinished line of one stream."""

    __slots__ = ("dropping", "partial", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream: Stream = stream
        self.partial = bytearray()
        # True while skipping the rest of a line already emitted cut at max_line_bytes.
        self.dropping = False


class _StepLog:
    """Turns the bytes of both pipes into lines, applying the line-length and log-size caps.

    Memory stays bounded whatever the step writes: an unfinished line is held only up to
    ``max_line_bytes`` (plus one pipe read), and lines past ``max_log_bytes`` are dropped.
    """

    def __init__(self, batcher: _Batcher, max_line_bytes: int, max_log_bytes: int) -> None:
        self._batcher = batcher
        self._max_line = max_line_bytes
        self._max_log = max_log_bytes
        self._kept = 0
        self._discarding = False
        self._marker = f" …[line truncated at {max_line_bytes} bytes]"
        self._buffers = {_STDOUT: _LineBuffer("stdout"), _STDERR: _LineBuffer("stderr")}

    def feed(self, fd: int, data: bytes) -> None:
        """Bytes read from ``fd``."""
        if self._discarding:
            return  # the pipe is still drained (the caller read it), the bytes are dropped
        buf = self._buffers[fd]
        at = _now()
        out: list[LogLine] = []
        parts = data.split(b"\n")
        tail = parts.pop()  # after the last newline: the start of an unfinished line
        if parts:
            if buf.dropping:
                del parts[0]
                buf.dropping = False
            elif buf.partial:
                buf.partial += parts[0]
                parts[0] = bytes(buf.partial)
                buf.partial.clear()
            for raw in parts:
                self._line(out, at, buf.stream, raw[:-1] if raw.endswith(b"\r") else raw)
                if self._discarding:
                    break
        if tail and not buf.dropping and not self._discarding:
            buf.partial += tail
            if len(buf.partial) > self._max_line:
                self._line(out, at, buf.stream, bytes(buf.partial))
                buf.partial.clear()
                buf.dropping = True
        if out:
            self._batcher.add(out)

    def end(self, fd: int) -> None:
        """``fd`` reached end of file: its unfinished line, if any, is a line."""
        buf = self._buffers.get(fd)
        if buf is None:
            return
        if buf.partial and not self._discarding:
            out: list[LogLine] = []
            self._line(out, _now(), buf.stream, bytes(buf.partial))
            self._batcher.add(out)
        buf.partial.clear()
        buf.dropping = False

    def close(self) -> None:
        """No more output will be read."""
        for fd in self._buffers:
            self.end(fd)

    def system(self, text: str) -> None:
        """A line the executor itself writes; never dropped by the size cap."""
        self._batcher.add([_system_line(text)])

    def _line(self, out: list[LogLine], at: datetime, stream: Stream, raw: bytes) -> None:
        suffix = ""
        if len(raw) > self._max_line:
            raw = _cut(raw, self._max_line)
            suffix = self._marker
        size = len(raw) + 1  # the newline counts, as it did on the pipe
        if self._kept + size > self._max_log:
            self._discarding = True
            out.append(
                LogLine(
                    at,
                    "system",
                    f"log truncated: the step wrote more than {self._max_log} bytes; "
                    "further output is discarded",
                )
            )
            return
        self._kept += size
        out.append(LogLine(at, stream, raw.decode("utf-8", "replace") + suffix))


def _cut(raw: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes, backing off so as not to split a UTF-8 character."""
    cut = limit
    while cut > max(0, limit - 3) and raw[cut] & 0xC0 == 0x80:
        cut -= 1
    if raw[cut] & 0xC0 == 0x80:  # not UTF-8 anyway
        cut = limit
    return raw[:cut]


class _StepProcess(asyncio.SubprocessProtocol):
    """Feeds pipe data to the step log and tells when the process exited and the pipes
    closed (two separate facts: a grandchild may hold the pipes after the process exits)."""

    def __init__(self, steplog: _StepLog, loop: asyncio.AbstractEventLoop) -> None:
        self._steplog = steplog
        self._open = {_STDOUT, _STDERR}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Output from the process."""
        self._steplog.feed(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """A pipe reached end of file (or was closed by us)."""
        self._steplog.end(fd)
        self._open.discard(fd)
        if not self._open and not self.output_closed.done():
            self.output_closed.set_result(None)

    def process_exited(self) -> None:
        """The process exited and was reaped."""
        if not self.exited.done():
            self.exited.set_result(None)


def _now() -> datetime:
    return datetime.now(UTC)


def _system_line(text: str) -> LogLine:
    return LogLine(_now(), "system", text)


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


# -- folder, environment, command ------------------------------------------------------------


def _resolve_user(name: str) -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise _Refused(f"cannot run the step as user {name!r}: no such user on this machine") from None
    euid = os.geteuid()
    if euid not in (0, user.pw_uid):
        raise _Refused(
            f"cannot run the step as user {name!r}: the worker runs as uid {euid}, "
            "and running steps as another user needs root"
        )
    return user


def _credentials(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess arguments that switch to ``user`` (none when we already are that user)."""
    if user is None or user.pw_uid == os.geteuid():
        return {}
    # extra_groups=[] drops the server's supplementary groups (root's, e.g. docker).
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _make_folder(request: StepRequest, user: pwd.struct_passwd | None) -> Path:
    """Create the step's working folder with the script in it; owned by ``user`` if given."""
    root = request.work_root.absolute()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is not None and user.pw_uid != os.geteuid():
        _let_through(root, user)
    folder = Path(tempfile.mkdtemp(prefix="step-", dir=root))
    try:
        script = folder / _SCRIPT_FILES[request.syntax]
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(request.script.encode("utf-8", "surrogateescape"))
        if user is not None:
            os.chown(script, user.pw_uid, user.pw_gid)
            os.chown(folder, user.pw_uid, user.pw_gid)
    except BaseException:
        _remove_tree(folder)
        raise
    return folder


def _let_through(root: Path, user: pwd.struct_passwd) -> None:
    """Make sure ``user`` can reach folders inside ``root`` by absolute path ($TMPDIR,
    $SHOAL_WORK_DIR): ``root`` gets search-only permission (0711: enter, not list; each
    step folder is 0700 and its user's own), and every folder above it must allow it."""
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o011 != 0o011:
        root.chmod(mode | 0o011)
    for folder in [root.resolve(), *root.resolve().parents]:
        st = folder.stat()
        # The kernel checks only the first class that matches: owner, else group, else others.
        # The step runs with its primary group only (extra_groups=[]).
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise _Refused(
                f"cannot run the step as user {user.pw_name!r}: it cannot reach the work folder "
                f"{root} because {folder} is not searchable by it; let other users enter "
                f"{folder} (chmod o+x) or keep the data folder under folders they may enter"
            )


def _environment(
    request: StepRequest, folder: Path, user: pwd.struct_passwd | None, tools_env: dict[str, str]
) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": user.pw_dir if user is not None else str(folder),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(folder),
    }
    env.update(request.env)
    env["SHOAL_WORK_DIR"] = str(folder)  # set last: it must name the real folder
    env["SHOAL_ARTIFACTS_DIR"] = tools_env["SHOAL_ARTIFACTS_DIR"]
    env["PATH"] = f"{tools_env['SHOAL_TOOLS_DIR']}:{env['PATH']}"  # shoal-artifact first
    return env


def _command(syntax: str, path: str) -> list[str]:
    """The interpreter command; the script is a file in the working folder (the cwd)."""
    script = _SCRIPT_FILES[syntax]
    if syntax == "bash":
        return ["/bin/bash", script]
    if syntax == "sh":
        return ["/bin/sh", script]
    # The server's own interpreter may be a virtualenv another user cannot read and which
    # carries the server's packages; user code gets the machine's python3.
    return [shutil.which("python3", path=path) or sys.executable, script]


def _remove_tree(folder: Path) -> None:
    """Remove a step's folder, including what the step made read-only; never raises."""
    if _remove_flat(folder):
        return
    tried: set[str] = set()

    def retry(func: Callable[..., Any], path: str, _exc: object) -> None:
        if path in tried or not os.path.lexists(path):
            if os.path.lexists(path):
                log.warning("could not remove %s from the step folder (%s failed)", path, func.__name__)
            return
        tried.add(path)
        try:
            if path != str(folder):
                os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                _rmtree(path, retry)
            else:
                os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s from the step folder: %s", path, exc)

    _rmtree(str(folder), retry)


def _remove_flat(folder: Path) -> bool:
    """The common case cheaply: a folder holding only files (the script, maybe some
    output). False (nothing lost) when it holds more, so the careful path runs."""
    try:
        with os.scandir(folder) as entries:
            found = list(entries)
        if any(e.is_dir(follow_symlinks=False) for e in found):
            return False
        for entry in found:
            os.unlink(entry.path)
        os.rmdir(folder)
    except OSError:
        return False
    return True


def _rmtree(path: str, handler: Callable[[Callable[..., Any], str, object], None]) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=handler)
    else:
        shutil.rmtree(path, onerror=handler)


def prefer_pidfd_child_watcher() -> bool:
    """On Python 3.11, let asyncio learn of step exits through a pidfd instead of a
    thread per child (that thread costs ~10% of a trivial step). Later Pythons already
    do this and deprecate child watchers, so this does nothing there. Call it once, from
    inside the running loop of the process that runs steps. True when installed."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # the kernel has no pidfd (before Linux 5.3)
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(asyncio.get_running_loop())
    return True
