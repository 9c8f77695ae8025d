"""A step's process, started directly rather than through asyncio's subprocess transport.

Fork and exec return once the program runs, so the moment they return is when the step
began. asyncio's transport attaches the pipes over several turns of the event loop after
that; under load (a built-in worker running sixteen steps at once) those turns took ten
milliseconds and more, by which time the program had long been running, and a step's
start was recorded that much late. Here the start is taken at once, the output pipes are
then read by the loop, and the exit is learned through a pidfd (a thread waits instead on
kernels without one).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from agent.steplog import STDERR, STDOUT, StepLog

__all__ = ["StepProcess"]


class StepProcess:
    """One running step process. ``exited`` resolves once it has exited and been reaped;
    ``output_closed`` once both its pipes reached end of file: two separate facts, since a
    process that left the step's group may hold the pipes after the step's own exited.
    Output goes to the step log as it is read, in the order it was read across both pipes."""

    def __init__(self, proc: subprocess.Popen[bytes], steplog: StepLog) -> None:
        self._proc = proc
        self.pid = proc.pid  # also its process group: it starts a session of its own
        self.started_at = datetime.now(UTC)
        self._steplog = steplog
        self._loop = asyncio.get_running_loop()
        self._open = {STDOUT, STDERR}
        self._pipes: list[asyncio.BaseTransport] = []
        self._pidfd: int | None = None
        self.exited: asyncio.Future[None] = self._loop.create_future()
        self.output_closed: asyncio.Future[None] = self._loop.create_future()

    @classmethod
    async def start(
        cls, args: Sequence[str], steplog: StepLog, *, cwd: Path, env: dict[str, str],
        **credentials: Any,
    ) -> StepProcess:
        """Start ``args`` in ``cwd`` with exactly ``env``, stdin from /dev/null, in a
        session (and process group) of its own; OSError when it cannot be started.
        ``credentials``: the user/group switch of agent.launch.credentials."""
        # Blocking only until the program runs (vfork), as asyncio's own transport does.
        proc = subprocess.Popen(  # noqa: ASYNC220
            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True, bufsize=0, **credentials,
        )
        process = cls(proc, steplog)
        try:
            await process._attach()
        except BaseException:
            # Never left running unwatched: killed and reaped here (quick after SIGKILL).
            process.close()
            process._stop_watching()
            proc.kill()
            proc.wait(5)
            raise
        return process

    async def _attach(self) -> None:
        assert self._proc.stdout is not None and self._proc.stderr is not None
        for fd, pipe in ((STDOUT, self._proc.stdout), (STDERR, self._proc.stderr)):
            transport, _ = await self._loop.connect_read_pipe(partial(_Pipe, self, fd), pipe)
            self._pipes.append(transport)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:  # no pidfd (Linux before 5.3)
            self._loop.run_in_executor(None, self._wait_in_thread)
            return
        self._loop.add_reader(self._pidfd, self._reap)

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: the signal that ended it), else None."""
        return self._proc.returncode

    def _reap(self) -> None:
        # A pidfd becomes readable when the process exits; poll() reaps it (and keeps
        # Popen's own record right, so it never warns the process is "still running").
        if self._proc.poll() is None:
            return
        self._stop_watching()
        if not self.exited.done():
            self.exited.set_result(None)

    def _wait_in_thread(self) -> None:
        self._proc.wait()
        self._loop.call_soon_threadsafe(self._exited_in_thread)

    def _exited_in_thread(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _stop_watching(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def received(self, fd: int, data: bytes) -> None:
        """Output read from one of the pipes."""
        self._steplog.feed(fd, data)

    def pipe_closed(self, fd: int) -> None:
        """A pipe reached end of file (or was closed by us)."""
        self._steplog.end(fd)
        self._open.discard(fd)
        if not self._open and not self.output_closed.done():
            self.output_closed.set_result(None)

    def close(self) -> None:
        """Stop reading the pipes (something that escaped the group may hold them open).
        A process not reaped yet stays watched, so that it is reaped once it exits."""
        for transport in self._pipes:
            transport.close()
        if self._proc.stdout is not None and not self._pipes:
            self._proc.stdout.close()
        if self._proc.stderr is not None and len(self._pipes) < 2:
            self._proc.stderr.close()


class _Pipe(asyncio.Protocol):
    """One of the process's output pipes."""

    def __init__(self, process: StepProcess, fd: int) -> None:
        self._process = process
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        """Output from the process."""
        self._process.received(self._fd, data)

    def connection_lost(self, exc: Exception | None) -> None:
        """End of file, or closed by us."""
        self._process.pipe_closed(self._fd)
