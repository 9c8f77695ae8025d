"""One projector process's pipes, for adapters/projector_process.py: frames in from its
stdout, frames out to its stdin, and when it has gone (exited, and its frames ended)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, cast

from adapters.dispatch.builtinchild import describe_exit
from agent.pipe import BrokenPipeStream, FrameReader, encode

log = logging.getLogger("shoal.projector")

# A process whose frames ended gets this long to exit on its own before it is killed.
_EXIT_GRACE_S = 5.0


class FrameSink(Protocol):
    """Who reads the process's frames."""

    def on_frame(self, child: ProjectorChild, body: bytes) -> None:
        """One frame's body, as it came."""


class ProjectorChild(asyncio.SubprocessProtocol):
    """One projector process's pipes. ``ready`` is set by its ``ready`` frame; ``gone``
    once it has exited and its frames have ended."""

    def __init__(self, owner: FrameSink, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieved)
        self.pid = 0
        self.ready_at = 0.0
        self.closing = False  # the server is ending it: its exit is expected
        self.error = ""  # the last error it reported
        self.stalled_s = 0.0  # killed by the watchdog after this long without a frame
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
            self._owner.on_frame(self, body)

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
