"""A long-lived child process of the server spoken to in agent/pipe.py's frames: the
built-in worker process (adapters/dispatch/builtinchild.py) and the projector process
(adapters/projector_child.py) are both one.

:class:`FramedChild` is the asyncio protocol of its pipes: frames in from its stdout,
frames out to its stdin, and ``gone`` once it has exited *and* its frames have ended (not
before, so that no frame it wrote on its way out is lost). A corrupt stream kills it:
nothing after a bad length can be framed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import cast

from agent.pipe import BrokenPipeStream, Frame, FrameReader, MalformedFrame, encode

# A process whose frames ended (it closed its end, e.g. on SIGTERM) gets this long to exit
# on its own before it is killed: it may be removing its steps' folders.
EXIT_GRACE_S = 5.0


class FramedChild(asyncio.SubprocessProtocol):
    """One child process's pipes; subclasses read its frames in :meth:`on_body`.
    ``ready`` is theirs to set (on the process's ``ready`` frame); ``gone`` is set once the
    process has exited and its frames have ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str, log: logging.Logger) -> None:
        self._loop = loop
        self._what = what  # "the projector process", for messages
        self._log = log
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.pid = 0
        self.closing = False  # the server is ending it: its exit is expected
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._reader = FrameReader()
        self._broken = False
        self._frames_ended = False
        self._exited = False

    def on_body(self, body: bytes) -> None:
        """One frame's body, as it came from the process."""
        raise NotImplementedError

    def refuse_ready(self, frame: Frame, protocol: int) -> str | None:
        """Check the process's ``ready`` frame: None when it can be taken, else why not (it
        speaks another protocol); MalformedFrame when it comes a second time."""
        if self.ready.done():
            raise MalformedFrame("ready: sent twice")
        if frame.get("protocol") != protocol:
            return f"it speaks protocol {frame.get('protocol')!r}, the server {protocol}"
        return None

    # -- asyncio's side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The process runs; its pipes are connected."""
        # Casts, not isinstance checks: uvloop's transports implement these interfaces
        # without subclassing asyncio's classes.
        process = cast("asyncio.SubprocessTransport", transport)
        self._transport = process
        self.pid = process.get_pid()
        self._stdin = cast("asyncio.WriteTransport", process.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        """Frames from the process (its stdout)."""
        if fd != 1 or self._broken or isinstance(data, str):  # str only from text-mode pipes
            return
        try:
            bodies = self._reader.feed(data)
        except BrokenPipeStream as exc:
            self._log.error(f"the pipe from {self._what} is corrupt; killing it",
                            extra={"pid": self.pid, "reason": str(exc)})
            self._broken = True
            self.kill()
            return
        for body in bodies:
            self.on_body(body)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """A pipe closed; the end of its stdout is the end of its frames."""
        if fd == 1:
            self._frames_ended = True
            if not self._exited and not self.closing:
                self._loop.call_later(EXIT_GRACE_S, self.kill)
            self._check_gone()

    def process_exited(self) -> None:
        """The process exited and was reaped."""
        self._exited = True
        self._check_gone()

    def _check_gone(self) -> None:
        if self._frames_ended and self._exited and not self.gone.done():
            self.gone.set_result(None)

    # -- the server's side -----------------------------------------------------------------

    def status(self) -> str:
        """How the process ended (or that it has not)."""
        return describe_exit(None if self._transport is None else self._transport.get_returncode())

    def send(self, frame: Frame) -> None:
        """Write a frame to the process; dropped once it is closing or gone."""
        self.write(encode(frame))

    def write(self, data: bytes) -> None:
        """Write encoded frames to the process; dropped once it is closing or gone."""
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing() and not self.gone.done():
            stdin.write(data)

    def kill(self) -> None:
        """SIGKILL the process (if it still runs)."""
        if self._transport is not None and self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    async def end_now(self, timeout: float = 5.0) -> None:
        """SIGKILL it, wait (up to ``timeout``) until it has gone, and release the pipes:
        a process given up on is still reaped, never left behind a closing loop."""
        self.kill()
        await asyncio.wait({self.gone}, timeout=timeout)
        self.close()

    def close_stdin(self) -> None:
        """End of file on its stdin (after what was written): the process finishes what
        it has in hand and exits."""
        if self._stdin is not None:
            self._stdin.close()

    def close(self) -> None:
        """Release the pipes (the process has gone, or is killed)."""
        if self._transport is not None:
            self._transport.close()


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words."""
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
