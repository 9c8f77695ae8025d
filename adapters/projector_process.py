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

A process that hangs rather than dies (stopped, deadlocked, stuck in a call that never
returns) would leave the read models still with nothing to say so. A watchdog times how
long the read models have been behind the saves with not a frame from the process: after
``stall_after_s`` it is logged and ``last_error`` says so (health "degraded"); after
``kill_after_s`` the process is killed and another started as above. A process that is
merely failing batches keeps sending ``error`` frames (at least every 30 s, its longest
retry back-off), so it is never taken for hung.
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

from adapters.projector import PROTOCOL
from adapters.projector_child import ProjectorChild
from agent.pipe import MalformedFrame, decode, number, text
from projections.watch import PositionWatch

log = logging.getLogger("shoal.projector")

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
    stall_after_s: float = 10.0
    kill_after_s: float = 60.0

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
        self._child: ProjectorChild | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake_lock = threading.Lock()
        self._wanted = 0  # the highest position a save asked the projector to reach
        self._wake_pending = False
        self._stopping = False
        self._restart: asyncio.Task[None] | None = None
        self._delay = config.restart_delay
        self._watchdog: asyncio.Task[None] | None = None
        # Since when the read models have been behind the saves without a frame from the
        # process (loop time); None while they are not behind, or it has just spoken.
        self._quiet_since: float | None = None
        self._stall_noted = False

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
            if self._quiet_since is None and self._loop is not None:
                self._quiet_since = self._loop.time()

    # -- the process's life ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the process; returns once the read models have caught up with the log.
        ProjectorError when it cannot start or ends first."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        await self._spawn()
        self._watchdog = self._loop.create_task(self._watch_for_stalls())

    async def stop(self, grace: float = 10.0) -> None:
        """End the process: it lets its batch in hand commit and exits; killed after
        ``grace`` seconds."""
        self._stopping = True
        for task in (self._restart, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        child = ProjectorChild(self, loop)
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
            await child.end_now()
            raise
        if not child.ready.done() or child.ready.exception() is not None:
            self._child = None
            why = (str(child.ready.exception()) if child.ready.done()
                   else f"it ended before it was ready ({child.status()})")
            if child.error:
                why += f": {child.error}"
            await child.end_now()
            raise ProjectorError(f"the projector process could not start: {why}")
        child.ready_at = loop.time()
        child.gone.add_done_callback(lambda _: self._died(child))
        log.info("projector process started", extra={"pid": child.pid, "position": self.watch.position})

    def _died(self, child: ProjectorChild) -> None:
        child.close()
        if child is not self._child or child.closing or self._stopping:
            return
        self._child = None
        if child.stalled_s:
            reason = (f"the projector process (pid {child.pid}) made no progress for "
                      f"{child.stalled_s:.0f}s and was killed")
        else:
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

    # -- hangs -----------------------------------------------------------------------------

    async def _watch_for_stalls(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        while True:
            await asyncio.sleep(min(1.0, cfg.stall_after_s / 2))
            child, since = self._child, self._quiet_since
            if child is None or since is None or not child.ready.done() or child.gone.done():
                continue
            quiet = loop.time() - since
            behind = self._wanted - self.watch.position
            if quiet >= cfg.kill_after_s:
                log.error("the projector process has sent nothing for %.0fs while the read models "
                          "are behind; killing it", quiet,
                          extra={"pid": child.pid, "behind": behind})
                child.stalled_s = quiet
                self._quiet_since = None
                child.kill()  # its end starts another (_died)
            elif quiet >= cfg.stall_after_s and not self._stall_noted:
                self._stall_noted = True
                log.warning("the read models have not moved for %.0fs", quiet,
                            extra={"pid": child.pid, "behind": behind})
                if self.last_error is None:
                    events = "event" if behind == 1 else "events"
                    self.last_error = (f"the read models have not moved for {quiet:.0f}s: the projector "
                                       f"process (pid {child.pid}) is {behind} {events} behind")

    def _heard(self, child: ProjectorChild, progressed: bool) -> None:
        """A frame came from the process: it is alive, so the quiet clock starts again
        (while the read models are still behind); ``progressed``: they moved."""
        if child is not self._child:
            return
        behind = self._wanted > self.watch.position
        self._quiet_since = self._loop.time() if behind and self._loop is not None else None
        if progressed and self._stall_noted:
            self._stall_noted = False
            log.info("the read models are moving again", extra={"pid": child.pid})

    # -- frames ----------------------------------------------------------------------------

    def on_frame(self, child: ProjectorChild, body: bytes) -> None:
        """A frame from ``child``: progress, an error, or that it is ready."""
        try:
            frame = decode(body)
            op = frame["op"]
            if op == "progress":
                self.watch.advance(number(frame, "position"))
                if child.ready.done():
                    self.last_error = None
                self._heard(child, progressed=True)
            elif op == "error":
                child.error = text(frame, "error")
                self.last_error = child.error
                if child.ready.done():  # before, it is why the start failed: told there
                    log.warning("a projection batch failed; the projector retries it",
                                extra={"pid": child.pid, "error": child.error})
                self._heard(child, progressed=False)
            elif op == "ready":
                refused = child.refuse_ready(frame, PROTOCOL)
                if refused is not None:
                    child.ready.set_exception(ProjectorError(refused))
                    return
                position = number(frame, "position")
                self.watch.advance(position)
                self.last_error = None
                child.ready.set_result(None)
                self._heard(child, progressed=True)
                if self._wanted > position:
                    self._send_wake()  # saved while it caught up: its first look may miss it
            else:
                raise MalformedFrame(f"unknown op {op!r}")
        except MalformedFrame as exc:
            log.warning("refused a frame from the projector process",
                        extra={"pid": child.pid, "reason": str(exc)})
