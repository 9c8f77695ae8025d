"""A step's log: the bytes of its stdout and stderr become lines, batched for a sink.

:class:`StepLog` splits what the pipes deliver into lines, cuts a line longer than
``max_line_bytes`` (64 KiB by default) with a marker, and stops keeping output once the log
reaches ``max_log_bytes``; :class:`Batcher` hands the lines to the step's
:data:`~agent.ports.LogSink` in batches, one batch in flight at a time. Memory stays bounded
whatever the step writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from agent.ports import LogLine, LogSink, Stream

__all__ = ["STDERR", "STDOUT", "Batcher", "StepLog", "cut", "now", "system_line"]

# The child's file descriptors, as asyncio's subprocess protocol names the pipes.
STDOUT, STDERR = 1, 2


class Batcher:
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


class StepLog:
    """Turns the bytes of both pipes into lines, applying the line-length and log-size caps.

    Memory stays bounded whatever the step writes: an unfinished line is held only up to
    ``max_line_bytes`` (plus one pipe read), and lines past ``max_log_bytes`` are dropped.
    """

    def __init__(self, batcher: Batcher, max_line_bytes: int, max_log_bytes: int) -> None:
        self._batcher = batcher
        self._max_line = max_line_bytes
        self._max_log = max_log_bytes
        self._kept = 0
        self._discarding = False
        self._marker = f" …[line truncated at {max_line_bytes} bytes]"
        self._buffers = {STDOUT: _LineBuffer("stdout"), STDERR: _LineBuffer("stderr")}

    def feed(self, fd: int, data: bytes) -> None:
        """Bytes read from ``fd``."""
        if self._discarding:
            return  # the pipe is still drained (the caller read it), the bytes are dropped
        buf = self._buffers[fd]
        at = now()
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
            self._line(out, now(), buf.stream, bytes(buf.partial))
            self._batcher.add(out)
        buf.partial.clear()
        buf.dropping = False

    def close(self) -> None:
        """No more output will be read."""
        for fd in self._buffers:
            self.end(fd)

    def system(self, text: str) -> None:
        """A line the executor itself writes; never dropped by the size cap."""
        self._batcher.add([system_line(text)])

    def _line(self, out: list[LogLine], at: datetime, stream: Stream, raw: bytes) -> None:
        suffix = ""
        if len(raw) > self._max_line:
            raw = cut(raw, self._max_line)
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


def cut(raw: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes, backing off so as not to split a UTF-8 character."""
    end = limit
    while end > max(0, limit - 3) and raw[end] & 0xC0 == 0x80:
        end -= 1
    if raw[end] & 0xC0 == 0x80:  # not UTF-8 anyway
        end = limit
    return raw[:end]


def now() -> datetime:
    """The current time, as log lines carry it (UTC)."""
    return datetime.now(UTC)


def system_line(text: str) -> LogLine:
    """A line the executor itself writes into the step's log, stamped now."""
    return LogLine(now(), "system", text)

