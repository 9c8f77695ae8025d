"""The SSH step runner: runs script steps on a machine Shoal reaches by SSH, no agent there.

:class:`SshStepRunner` implements :class:`agent.ports.StepRunner` for one SSH worker. Each
step is one channel on the worker's shared connection (:class:`SshConnections`), at most
``capacity`` at once; what runs remotely is described in :mod:`adapters.ssh.remote`. The
log goes through :mod:`agent.steplog`, so it is cut, capped and batched exactly as an
agent's. Only bash runs here: another syntax fails the step at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncssh

from adapters.ssh.connections import HostKeyMismatch, SshConnections, SshError, SshTarget
from adapters.ssh.files import fetch_artifacts, upload_packages
from adapters.ssh.remote import StepSession, command, launcher
from agent.health import run_health_check
from agent.packages import PackageCache, PackageError
from agent.ports import ArtifactSink, LogSink, StartedCallback, StepRequest, StepResult
from agent.steplog import Batcher, StepLog, system_line
from domain.messages import HealthAnswer, HealthCheck

__all__ = ["SshStepRunner"]

log = logging.getLogger("shoal.ssh")

_KILL_AFTER_S = 5.0  # `timeout -k`: SIGKILL this long after the deadline's SIGTERM
_STOP_WAIT_S = 15.0  # how long the remote side may take to stop and clean up after EOF
_BACKSTOP_S = 10.0  # past the deadline and the kill grace, the client stops the step itself


class SshStepRunner:
    """Runs bash steps on one SSH worker (see the module docstring).

    ``packages``: where package files come from (a step that lists packages fails without).
    ``flush_interval`` / ``flush_lines``: log batching, as for the local executor.
    """

    def __init__(
        self, connections: SshConnections, worker_id: str, target: SshTarget, capacity: int, *,
        packages: PackageCache | None = None, flush_interval: float = 0.1, flush_lines: int = 1000,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._connections = connections
        self._worker_id = worker_id
        self._target = target
        self._slots = asyncio.Semaphore(capacity)
        self._packages = packages
        self._flush_interval = flush_interval
        self._flush_lines = flush_lines
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        request: StepRequest,
        sink: LogSink,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
        on_artifact: ArtifactSink | None = None,
    ) -> StepResult:
        """Run one step on the worker; same contract as ``StepExecutor.run`` (the pid given
        to ``on_started`` is the remote one)."""
        refusal = _refusal(request)
        if refusal is not None:
            await sink([system_line(refusal)])
            return StepResult("failed", None, refusal)
        if cancel is not None and cancel.is_set():
            await sink([system_line("cancelled")])
            return StepResult("cancelled", None, "cancelled")
        async with self._slots:
            try:
                conn = await self._connections.get(self._worker_id, self._target)
            except SshError as exc:
                await sink([system_line(str(exc))])
                return StepResult("failed", None, str(exc))
            return await self._run_on(conn, request, sink, cancel, on_started, on_artifact)

    async def health(self, script: str, timeout_s: float) -> HealthAnswer:
        """Connect and run the policy's bash health script: healthy / has_warnings /
        unhealthy (a pinned host key that does not match is unhealthy, with both
        fingerprints); raises SshUnavailable when the worker cannot be reached."""
        try:
            await self._connections.get(self._worker_id, self._target)
        except HostKeyMismatch as exc:
            return HealthAnswer("unhealthy", str(exc))
        check = HealthCheck(self._worker_id, script, timeout_s)
        return await run_health_check(self, check, Path("/nonexistent"), {})

    async def _run_on(
        self, conn: asyncssh.SSHClientConnection, request: StepRequest, sink: LogSink,
        cancel: asyncio.Event | None, on_started: StartedCallback | None,
        on_artifact: ArtifactSink | None,
    ) -> StepResult:
        token = secrets.token_hex(8)
        launch, skipped = launcher(request.env)
        script = request.script.encode("utf-8", "surrogateescape")
        timeout = "" if request.timeout_s is None else _seconds(request.timeout_s)
        cmd = command(token, len(launch), len(script), timeout, _seconds(_KILL_AFTER_S),
                      bool(request.packages))
        batcher = Batcher(sink, self._flush_interval, self._flush_lines)
        steplog = StepLog(batcher, request.max_line_bytes, request.max_log_bytes)
        for name in skipped:
            steplog.system(f"variable {name!r} not set: bash cannot export that name")
        session = StepSession(steplog, token)
        try:
            chan, _ = await conn.create_session(lambda: session, cmd, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            return await self._lost(sink, conn, exc)
        flusher: asyncio.Task[None] | None = None
        try:
            chan.write(launch + script)
            ending = await self._prepare(chan, session, request, sink)
            if ending is None:
                await _first(session.started, session.closed)
                if session.started.done() and not session.started.cancelled():
                    session.started_at = asyncio.get_running_loop().time()
                    if on_started is not None:
                        await on_started(session.started.result())
                    flusher = self._spawn(batcher.run())
                    ending = await self._supervise(chan, session, flusher, request, cancel)
                else:
                    ending = "ended"
            if flusher is None:
                flusher = self._spawn(batcher.run())
            result = await self._finish(chan, session, steplog, request, ending, on_artifact, conn)
            batcher.close()
            await flusher
            return result
        except BaseException:
            chan.close()  # the remote watcher sees stdin end and stops the step
            if flusher is not None:
                flusher.cancel()
            raise

    async def _prepare(self, chan: asyncssh.SSHClientChannel[bytes], session: StepSession,
                       request: StepRequest, sink: LogSink) -> str | None:
        """Wait for the folder; upload the packages into it. None when the step may start."""
        if not request.packages:
            return None
        await _first(session.folder, session.closed)
        if not session.folder.done() or session.folder.cancelled():
            return "ended"
        placed: list[str] = []
        try:
            sftp = await self._connections.sftp(self._worker_id, self._target)
            await upload_packages(sftp, self._packages, request.packages, session.folder.result(),
                                  request.work_root, placed)
        except (PackageError, SshError) as exc:
            await sink([system_line(text) for text in (*placed, str(exc))])
            chan.write_eof()
            return f"refused:{exc}"
        for text in placed:  # batched with the log, so after on_started
            session.system(text)
        chan.write(b"go\n")
        return None

    async def _supervise(self, chan: asyncssh.SSHClientChannel[bytes], session: StepSession,
                         flusher: asyncio.Task[None], request: StepRequest,
                         cancel: asyncio.Event | None) -> str:
        """Wait for the script to end, a cancel, or (as a backstop to the remote deadline)
        the deadline long past; stop the remote step in the last two cases."""
        waits: set[asyncio.Future[Any]] = {session.exited, session.closed, flusher}
        cancelled: asyncio.Task[Any] | None = None
        if cancel is not None:
            cancelled = self._spawn(cancel.wait())
            waits.add(cancelled)
        backstop = None if request.timeout_s is None else request.timeout_s + _KILL_AFTER_S + _BACKSTOP_S
        try:
            done, _ = await asyncio.wait(waits, timeout=backstop, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if cancelled is not None:
                cancelled.cancel()
        if flusher in done and (failure := flusher.exception()) is not None:
            raise failure
        if session.exited in done or session.closed in done:
            return "ended"
        chan.write_eof()  # the remote watcher stops the process group
        return "cancelled" if cancelled is not None and cancelled in done else "backstop"

    async def _finish(
        self, chan: asyncssh.SSHClientChannel[bytes], session: StepSession, steplog: StepLog,
        request: StepRequest, ending: str, on_artifact: ArtifactSink | None,
        conn: asyncssh.SSHClientConnection,
    ) -> StepResult:
        """Collect artifacts, let the remote side clean up, and say how the step ended."""
        if ending == "cancelled":
            steplog.system("cancelled")
        await _first(session.exited, session.closed, timeout=_STOP_WAIT_S)
        exited = session.exited.result() if session.exited.done() and not session.exited.cancelled() else None
        problems: list[str] = []
        if exited is not None and exited[1] and on_artifact is not None and ending == "ended":
            problems = await self._artifacts(session, steplog, request, on_artifact)
        chan.write_eof()
        closed = await _first(session.closed, timeout=_STOP_WAIT_S)
        if not closed:
            steplog.system("the SSH worker did not close the step's channel; closing it")
            chan.close()
        lost = session.closed.result() if session.closed.done() else None
        if ending.startswith("refused:"):
            return StepResult("failed", None, ending.removeprefix("refused:"))
        if ending == "cancelled":
            return StepResult("cancelled", exited[0] if exited else None, "cancelled")
        if ending == "backstop":
            reason = f"timed out after {_seconds(request.timeout_s or 0)}s"
            steplog.system(f"{reason}; the SSH worker did not stop it, stopped from here")
            return StepResult("timed_out", None, reason)
        if exited is None:
            why = self._connections.lost(self._worker_id, conn)
            if lost is not None or why is not None:
                reason = f"lost the SSH connection to {self._target.endpoint}: {_why(lost, why)}"
            else:
                reason = (f"the step's remote shell ended without reporting how the step ended "
                          f"(exit status {chan.get_exit_status()})")
            steplog.system(reason)
            return StepResult("failed", None, reason)
        ran_s = asyncio.get_running_loop().time() - session.started_at
        return self._result(exited[0], ran_s, request, steplog, problems)

    async def _artifacts(self, session: StepSession, steplog: StepLog, request: StepRequest,
                         on_artifact: ArtifactSink) -> list[str]:
        async def note(text: str) -> None:
            steplog.system(text)

        try:
            sftp = await self._connections.sftp(self._worker_id, self._target)
            return await fetch_artifacts(sftp, session.folder.result(), request.work_root,
                                         on_artifact, note)
        except (SshError, OSError, asyncssh.Error) as exc:
            problem = f"artifacts not returned: {exc}"
            steplog.system(problem)
            return [problem]

    def _result(self, code: int, ran_s: float, request: StepRequest, steplog: StepLog,
                problems: list[str]) -> StepResult:
        # `timeout` exits 124; 137 when the command needed the SIGKILL of `-k`.
        timed_out = request.timeout_s is not None and (
            code == 124 or (code == 128 + 9 and ran_s >= request.timeout_s))
        if timed_out:
            reason = f"timed out after {_seconds(request.timeout_s or 0)}s"
            steplog.system(f"{reason}; killed")
            return StepResult("timed_out", None, reason)
        if code == 0:
            if problems:
                return StepResult("failed", 0, "; ".join(problems))
            return StepResult("success", 0, "")
        return StepResult("failed", code, f"exit code {code}")

    async def _lost(self, sink: LogSink, conn: asyncssh.SSHClientConnection,
                    exc: BaseException) -> StepResult:
        why = self._connections.lost(self._worker_id, conn) or str(exc) or type(exc).__name__
        reason = f"lost the SSH connection to {self._target.endpoint}: {why}"
        await sink([system_line(reason)])
        return StepResult("failed", None, reason)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))
        return task


def _refusal(request: StepRequest) -> str | None:
    if request.syntax != "bash":
        return f"SSH workers run bash scripts only; this step is {request.syntax}"
    if request.run_as_user is not None:
        return "SSH workers run steps as the SSH user; run_as_user is not supported there"
    return None


async def _first(*futures: asyncio.Future[Any], timeout: float | None = None) -> bool:
    """Wait until one of ``futures`` is done (True) or ``timeout`` passed (False)."""
    done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return bool(done)


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def _why(exc: Exception | None, fallback: str | None) -> str:
    if isinstance(exc, asyncssh.Error) and exc.reason:
        return exc.reason
    if exc is not None:
        return str(exc) or type(exc).__name__
    return fallback or "the connection closed"


def _seconds(value: float) -> str:
    return f"{value:.10g}"
