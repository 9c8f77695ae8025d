"""The read models, seen from the server: a long-lived child process (adapters/projector.py)
that runs the projections, driven over a pipe with agent/pipe.py's framing.

:class:`ProjectorProcess` offers what the server used of the in-process runner:

* ``watch``: how far the read models have got (reads of one's own writes, the dispatcher,
  the event stream and the worker hub wait on it), advanced by the process's ``progress``
  frames;
* ``last_error``: set while a batch fails or the process is down (``/api/health`` then says
  "degraded"), cleared when it makes progress again;
* ``wake(position)``: the Application calls it after every save, from whichever thread
  saved. Wakes are coalesced: the highest position is remembered and one ``wake`` frame is
  written from the event loop, scheduled only when none is pending, so a burst of saves
  costs a few writes to the pipe, not one (and one thread hop) per save;
* ``start()``: spawn the process and wait for ``ready`` (it has caught up with the log: the
  server serves nothing before), and ``stop()``: end of file on its stdin.

When the process dies it is logged, ``last_error`` says so, and another starts after a
back-off that doubles while processes keep dying young (no crash loop). Meanwhile the read
models stand still, and reads wait for them as for a slow projection (503 after
``read_wait_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from adapters.dispatch.builtinchild import describe_exit
from adapters.projector import PROTOCOL
from agent.pipe import BrokenPipeStream, FrameReader, MalformedFrame, decode, encode, number, text
from projections.watch import PositionWatch

log = logging.getLogger("shoal.projector")

# A process whose frames ended gets this long to exit on its own before it is killed.
_EXIT_GRACE_S = 5.0


class ProjectorError(Exception):
    """The projector process could not be started (the message says why)."""


@dataclass(frozen=True)
class ProjectorConfig:
    """How to start the projector process and how patiently to restart it.

    ``restart_delay`` is the wait before starting a process again after one died; it
    doubles (up to ``max_restart_delay``) each time one dies within ``stable_after_s`` of
    being ready.
    """

    data_dir: Path
    database_url: str | None = None
    python: str = sys.executable
    poll_interval: float = 1.0
    restart_delay: float = 0.5
    max_restart_delay: float = 30.0
    stable_after_s: float = 30.0

    def command(self) -> list[str]:
        """The process's command line."""
        return [
            self.python, "-m", "adapters.projector", "--data-dir", str(self.data_dir.absolute()),
            "--poll-interval", repr(self.poll_interval),
            # It logs as much as the server does (its lines go to the server's stderr).
            "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        ]

    def environment(self) -> dict[str, str]:
        """The process's environment: the database URL goes there, never on the command
        line that every user of the machine can read."""
        env = dict(os.environ)
        env.pop("SHOAL_DATABASE_URL", None)
        if self.database_url is not None:
            env["SHOAL_DATABASE_URL"] = self.database_url
        return env


class ProjectorProcess:
    """The server's handle on the projector process (see the module docstring)."""

    def __init__(self, config: ProjectorConfig) -> None:
        self.config = config
        self.watch = PositionWatch()
        self.last_error: str | None = None
        self._child: _Child | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake_lock = threading.Lock()
        self._wanted = 0  # the highest position a save asked the projector to reach
        self._wake_pending = False
        self._stopping = False
        self._restart: asyncio.Task[None] | None = None
        self._delay = config.restart_delay

    @property
    def pid(self) -> int | None:
        """The live process's pid, if one runs."""
        child = self._child
        return child.pid if child is not None and not child.gone.done() else None

    # -- waking ----------------------------------------------------------------------------

    def wake(self, position: int) -> None:
        """Events up to ``position`` were saved: have the projector look now. Safe from any
        thread; cheap when a wake is already on its way."""
        with self._wake_lock:
            if position <= self._wanted:
                return
            self._wanted = position
            if self._wake_pending or self._loop is None:
                return
            self._wake_pending = True
        loop = self._loop
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._send_wake)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped
                loop.call_soon_threadsafe(self._send_wake)

    def _send_wake(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
            position = self._wanted
        child = self._child
        if child is not None and position > self.watch.position:
            child.send({"op": "wake", "position": position})

    # -- the process's life ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the process; returns once the read models have caught up with the log.
        ProjectorError when it cannot start or ends first."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        await self._spawn()

    async def stop(self, grace: float = 10.0) -> None:
        """End the process: it lets its batch in hand commit and exits; killed after
        ``grace`` seconds."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        child, self._child = self._child, None
        if child is None:
            return
        child.closing = True
        if not child.gone.done():
            child.close_stdin()
            done, _ = await asyncio.wait({child.gone}, timeout=grace)
            if not done:
                log.warning("the projector process did not exit; killing it", extra={"pid": child.pid})
                child.kill()
                await asyncio.wait({child.gone}, timeout=5.0)
        child.close()

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        child = _Child(self, loop)
        try:
            await loop.subprocess_exec(
                lambda: child, *self.config.command(), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=None, env=self.config.environment(),
            )
        except OSError as exc:
            raise ProjectorError(f"the projector process could not start: {exc}") from None
        # Wakes go to it from now on: they wait in its stdin while it catches up.
        self._child = child
        try:
            await asyncio.wait({child.ready, child.gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled while it catches up (the server is stopping): nobody would end it.
            self._child = None
            child.kill()
            child.close()
            raise
        if not child.ready.done() or child.ready.exception() is not None:
            self._child = None
            why = (str(child.ready.exception()) if child.ready.done()
                   else f"it ended before it was ready ({child.status()})")
            if child.error:
                why += f": {child.error}"
            child.kill()
            await asyncio.wait({child.gone}, timeout=5.0)
            child.close()
            raise ProjectorError(f"the projector process could not start: {why}")
        child.ready_at = loop.time()
        child.gone.add_done_callback(lambda _: self._died(child))
        log.info("projector process started", extra={"pid": child.pid, "position": self.watch.position})

    def _died(self, child: _Child) -> None:
        child.close()
        if child is not self._child or child.closing or self._stopping:
            return
        self._child = None
        reason = f"the projector process (pid {child.pid}) ended unexpectedly: {child.status()}"
        log.error("the projector process ended unexpectedly; starting another",
                  extra={"pid": child.pid, "status": child.status()})
        self.last_error = reason
        loop = asyncio.get_running_loop()
        if loop.time() - child.ready_at >= self.config.stable_after_s:
            self._delay = self.config.restart_delay  # it was not crash-looping
        self._restart = loop.create_task(self._start_again())

    def _next_delay(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.config.max_restart_delay)
        return delay

    async def _start_again(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._next_delay())
            try:
                await self._spawn()
                return
            except ProjectorError as exc:
                log.error("could not start the projector process again", extra={"error": str(exc)})
                self.last_error = str(exc)

    # -- frames ----------------------------------------------------------------------------

    def _on_frame(self, child: _Child, body: bytes) -> None:
        try:
            frame = decode(body)
            op = frame["op"]
            if op == "progress":
                self.watch.advance(number(frame, "position"))
                if child.ready.done():
                    self.last_error = None
            elif op == "error":
                child.error = text(frame, "error")
                self.last_error = child.error
                log.warning("a projection batch failed; the projector retries it",
                            extra={"pid": child.pid, "error": child.error})
            elif op == "ready":
                if child.ready.done():
                    raise MalformedFrame("ready: sent twice")
                if frame.get("protocol") != PROTOCOL:
                    child.ready.set_exception(ProjectorError(
                        f"it speaks protocol {frame.get('protocol')!r}, the server {PROTOCOL}"
                    ))
                    return
                position = number(frame, "position")
                self.watch.advance(position)
                self.last_error = None
                child.ready.set_result(None)
                if self._wanted > position:
                    self._send_wake()  # saved while it caught up: its first look may miss it
            else:
                raise MalformedFrame(f"unknown op {op!r}")
        except MalformedFrame as exc:
            log.warning("refused a frame from the projector process",
                        extra={"pid": child.pid, "reason": str(exc)})


class _Child(asyncio.SubprocessProtocol):
    """One projector process's pipes. ``ready`` is set by its ``ready`` frame; ``gone``
    once it has exited and its frames have ended."""

    def __init__(self, owner: ProjectorProcess, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieved)
        self.pid = 0
        self.ready_at = 0.0
        self.closing = False  # the server is ending it: its exit is expected
        self.error = ""  # the last error it reported
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._reader = FrameReader()
        self._broken = False
        self._frames_ended = False
        self._exited = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The process runs; its pipes are connected."""
        # Casts, not isinstance checks: uvloop's transports do not subclass asyncio's.
        process = cast("asyncio.SubprocessTransport", transport)
        self._transport = process
        self.pid = process.get_pid()
        self._stdin = cast("asyncio.WriteTransport", process.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        """Frames from the process (its stdout)."""
        if fd != 1 or self._broken or isinstance(data, str):
            return
        try:
            bodies = self._reader.feed(data)
        except BrokenPipeStream as exc:
            log.error("the pipe from the projector process is corrupt; killing it",
                      extra={"pid": self.pid, "reason": str(exc)})
            self._broken = True
            self.kill()
            return
        for body in bodies:
            self._owner._on_frame(self, body)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """A pipe closed; the end of its stdout is the end of its frames."""
        if fd == 1:
            self._frames_ended = True
            if not self._exited and not self.closing:
                self._loop.call_later(_EXIT_GRACE_S, self.kill)
            self._check_gone()

    def process_exited(self) -> None:
        """The process exited and was reaped."""
        self._exited = True
        self._check_gone()

    def _check_gone(self) -> None:
        if self._frames_ended and self._exited and not self.gone.done():
            self.gone.set_result(None)

    def status(self) -> str:
        """How the process ended (or that it has not)."""
        return describe_exit(None if self._transport is None else self._transport.get_returncode())

    def send(self, frame: dict[str, object]) -> None:
        """Write a frame to the process; dropped once it is closing or gone."""
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing() and not self.gone.done():
            stdin.write(encode(frame))

    def kill(self) -> None:
        """SIGKILL the process (if it still runs)."""
        if self._transport is not None and self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def close_stdin(self) -> None:
        """End of file on its stdin: it finishes its batch and exits."""
        if self._stdin is not None:
            self._stdin.close()

    def close(self) -> None:
        """Release the pipes."""
        if self._transport is not None:
            self._transport.close()


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # read by _spawn; nothing is left unretrieved
