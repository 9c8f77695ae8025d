"""The built-in worker process: runs the server's built-in steps in a child process.

The server starts ``python -m agent.builtin`` and drives it over the process's stdin and
stdout with the frames of agent/pipe.py. Spawning a step's processes and making and
removing its folder cost the better part of two milliseconds of CPU per step, most of it
holding the GIL; here they use another core and never stall the server's event loop.

* One asyncio loop and one :class:`~agent.executor.StepExecutor` run every step the server
  asks for, each in a task of its own; a step runs only on a ``run`` frame, once per id.
* Log batches, artifacts and package fetches are asks the server answers; the executor
  awaits them, so its batching and back-pressure work as they do in-process.
* When the server goes away (end of file on stdin, or SIGTERM), every step is aborted:
  its process group killed, its folder removed; then the process exits. SIGINT is
  ignored: a Ctrl-C in a terminal reaches the whole process group, and the server ends
  this process itself once it has stopped its steps.
* Frames go out on a private copy of the original stdout; fd 1 then points at stderr, so
  a stray print cannot corrupt the stream. Log lines go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from agent.artifacts import ArtifactNotReturned
from agent.executor import StepExecutor, prefer_pidfd_child_watcher
from agent.packages import PackageCache
from agent.pipe import (
    PROTOCOL,
    BrokenPipeStream,
    Frame,
    FrameReader,
    MalformedFrame,
    decode,
    encode,
    lines_to_wire,
    log_chunks,
    number,
    protect_stdout,
    request_from_wire,
    result_to_wire,
)
from agent.ports import Artifact, LogLine, StepRequest

log = logging.getLogger("shoal.builtin")


class ServerGone(ConnectionError):
    """The pipe to the server closed while an answer was awaited."""


class AskRefused(Exception):
    """The server answered an ask with a refusal (the message is its reason)."""


class BuiltInWorker:
    """Runs the steps the server asks for and relays what they do (see the module docstring).

    ``send`` writes one encoded frame to the server. ``packages_root``: the package cache
    (shared with the server's own). ``inbox``: where returned artifacts are moved for the
    server, which removes each once it has stored it.
    """

    def __init__(
        self, send: Callable[[bytes], None], *, packages_root: Path, inbox: Path,
        kill_grace: float = 2.0, flush_interval: float = 0.1, flush_lines: int = 1000,
    ) -> None:
        self._send = send
        self._inbox = inbox
        self._executor = StepExecutor(
            flush_interval=flush_interval, flush_lines=flush_lines, kill_grace=kill_grace,
            packages=PackageCache(packages_root, _PackagesFromServer(self)),
        )
        self._runs: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._last_run = 0
        self._asks: dict[int, asyncio.Future[Frame]] = {}
        self._ask_ids = count(1)
        self._open = True
        self._closing = False  # close() began: no new step starts

    # -- the pipe --------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        """Write a frame to the server; dropped once the pipe has closed."""
        if self._open:
            self._send(encode(frame))

    async def ask(self, frame: Frame) -> Frame:
        """Send an ask and await its answer; AskRefused when the server says no, ServerGone
        when the pipe closes first."""
        if not self._open:
            raise ServerGone("the server is gone")
        q = next(self._ask_ids)
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._asks[q] = waiter
        self.send({**frame, "q": q})
        try:
            answer = await waiter
        except asyncio.CancelledError:
            # The step was aborted: the server may stop working on the answer.
            self.send({"op": "drop", "q": q})
            raise
        finally:
            self._asks.pop(q, None)
        if answer.get("ok") is not True:
            raise AskRefused(str(answer.get("error") or "refused by the server"))
        return answer

    def on_body(self, body: bytes) -> None:
        """One frame body from the server; a frame that cannot be understood is logged
        and refused, never acted on."""
        try:
            frame = decode(body)
            op = frame["op"]
            if op == "run":
                self._on_run(frame)
            elif op == "answer":
                waiter = self._asks.get(number(frame, "q"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
            elif op == "cancel":
                running = self._runs.get(number(frame, "id"))
                if running is not None:
                    running[1].set()
            elif op == "abort":
                running = self._runs.get(number(frame, "id"))
                if running is not None:
                    running[0].cancel("aborted by the server")
            else:
                raise MalformedFrame(f"unknown op {op!r}")
        except MalformedFrame as exc:
            log.warning("refused a frame from the server", extra={"reason": str(exc)})

    async def close(self) -> None:
        """Abort every step (processes killed, folders removed) and wait until they are;
        the server, if it still listens, hears of each as ``aborted``."""
        self._closing = True
        tasks = [task for task, _ in self._runs.values()]
        for task in tasks:
            task.cancel("the built-in worker is stopping")
        if tasks:
            log.info("aborting the steps still running", extra={"count": len(tasks)})
            await asyncio.wait(tasks)
        self._open = False
        for waiter in self._asks.values():
            if not waiter.done():
                waiter.set_exception(ServerGone("the server is gone"))

    # -- steps -----------------------------------------------------------------------------

    def _on_run(self, frame: Frame) -> None:
        run_id = number(frame, "id")
        if run_id <= self._last_run:
            # Ids only grow: an old one is a repeated frame, never a step to run again.
            raise MalformedFrame(f"run: id {run_id} was used before")
        self._last_run = run_id
        if self._closing:
            # Asked while stopping (after a SIGTERM, the server may not know yet): the
            # step never starts, and the server hears it was stopped.
            self.send({"op": "aborted", "id": run_id})
            return
        try:
            request = request_from_wire(frame.get("request"))
        except MalformedFrame as exc:
            self.send({"op": "error", "id": run_id, "error": f"the built-in worker refused the step: {exc}"})
            raise
        cancel = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._run(run_id, request, cancel, frame.get("artifacts") is True), name=f"step-{run_id}"
        )
        self._runs[run_id] = (task, cancel)
        task.add_done_callback(_retrieved)

    async def _run(self, run_id: int, request: StepRequest, cancel: asyncio.Event, artifacts: bool) -> None:
        async def sink(lines: Sequence[LogLine]) -> None:
            for chunk in log_chunks(lines):
                await self.ask({"op": "log", "id": run_id, "lines": lines_to_wire(chunk)})

        async def started(pid: int, at: datetime | None = None) -> None:
            # Not awaited by the server: it handles the frames of a run in order, so this
            # one is recorded before any log batch, and the step need not wait for it.
            # The moment goes with it (the server's clock is this one), so the step's start
            # is when its process began, not when a busy server got round to recording it.
            self.send({"op": "started", "id": run_id, "pid": pid, "at": at or datetime.now(UTC)})

        async def returned(artifact: Artifact) -> None:
            # The staged copy is removed when this returns; the one in the inbox is the
            # server's to remove, whatever becomes of this process meanwhile.
            path = await asyncio.to_thread(self._into_inbox, artifact.path)
            try:
                await self.ask({"op": "artifact", "id": run_id, "name": artifact.name,
                                "size": artifact.size, "sha256": artifact.sha256, "path": str(path)})
            except AskRefused as exc:
                raise ArtifactNotReturned(str(exc)) from None

        try:
            result = await self._executor.run(
                request, sink, cancel, started, returned if artifacts else None
            )
        except asyncio.CancelledError:
            self.send({"op": "aborted", "id": run_id})
            raise
        except Exception as exc:
            if self._open:
                log.exception("step failed inside the built-in worker", extra={"task_id": request.task_id})
            self.send({"op": "error", "id": run_id, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self.send({"op": "finished", "id": run_id, **result_to_wire(result)})
        finally:
            self._runs.pop(run_id, None)

    def _into_inbox(self, path: Path) -> Path:
        self._inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._inbox / uuid.uuid4().hex
        shutil.move(path, target)  # a rename, unless the inbox is on another file system
        return target


class _PackagesFromServer:
    """The worker's PackageSource: the server fetches from its object store into the
    cache's partial file, so no package bytes cross the pipe."""

    def __init__(self, worker: BuiltInWorker) -> None:
        self._worker = worker

    async def fetch(self, sha256: str, dest: Path, /) -> None:
        """Have the server write the package ``sha256`` into ``dest``."""
        await self._worker.ask({"op": "fetch", "sha256": sha256, "path": str(dest)})


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # _run reports its own failures; nothing is left unretrieved


# -- the process -------------------------------------------------------------------------------


class _Inbound(asyncio.Protocol):
    """Frames from the server on stdin."""

    def __init__(self, worker: BuiltInWorker, ended: asyncio.Event) -> None:
        self._worker = worker
        self._ended = ended
        self._reader = FrameReader()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The pipe is open."""
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Bytes from the server."""
        try:
            bodies = self._reader.feed(data)
        except BrokenPipeStream as exc:
            # Nothing after a corrupt length can be framed again: end as if the server left.
            log.error("the pipe from the server is corrupt; stopping", extra={"reason": str(exc)})
            if self._transport is not None:
                self._transport.close()
            self._ended.set()
            return
        for body in bodies:
            self._worker.on_body(body)

    def connection_lost(self, exc: Exception | None) -> None:
        """End of file: the server closed the pipe or died."""
        self._ended.set()


class _Outbound(asyncio.Protocol):
    def __init__(self, ended: asyncio.Event) -> None:
        self._ended = ended

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed its end of the frame pipe."""
        self._ended.set()


async def serve(options: argparse.Namespace, frames_fd: int) -> int:
    """Serve the server on stdin and ``frames_fd`` until it goes away; the exit code."""
    prefer_pidfd_child_watcher()
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, ended.set)
    # A handler, not SIG_IGN: an ignored signal stays ignored in the steps' processes.
    loop.add_signal_handler(signal.SIGINT, lambda: log.debug("SIGINT ignored; the server ends this process"))
    out, _ = await loop.connect_write_pipe(
        lambda: _Outbound(ended), os.fdopen(frames_fd, "wb", buffering=0)
    )
    def send(data: bytes) -> None:
        if not out.is_closing():  # the server is gone: nobody reads
            out.write(data)

    worker = BuiltInWorker(
        send, packages_root=options.packages, inbox=options.inbox,
        kill_grace=options.kill_grace, flush_interval=options.flush_interval,
        flush_lines=options.flush_lines,
    )
    inbound, _ = await loop.connect_read_pipe(
        lambda: _Inbound(worker, ended), os.fdopen(0, "rb", buffering=0)
    )
    worker.send({"op": "ready", "pid": os.getpid(), "protocol": PROTOCOL})
    log.info("built-in worker ready")
    try:
        await ended.wait()
    finally:
        await worker.close()
        inbound.close()
        out.close()
    log.info("built-in worker stopped")
    return 0


class _JsonLines(logging.Formatter):
    """The server's log format (adapters/logs.py), kept minimal: agent/ cannot import it."""

    _standard = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            "process": "built-in worker", "pid": record.process,
        }
        line.update((k, v) for k, v in vars(record).items() if k not in self._standard and k[0] != "_")
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line the server starts this process with."""
    parser = argparse.ArgumentParser(prog="python -m agent.builtin", description=__doc__.split("\n")[0])
    parser.add_argument("--packages", type=Path, required=True, help="the package cache folder")
    parser.add_argument("--inbox", type=Path, required=True, help="where returned artifacts go")
    parser.add_argument("--kill-grace", type=float, default=2.0)
    parser.add_argument("--flush-interval", type=float, default=0.1)
    parser.add_argument("--flush-lines", type=int, default=1000)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m agent.builtin``."""
    options = parse(argv)
    frames_fd = protect_stdout()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=options.log_level, handlers=[handler], force=True)
    return asyncio.run(serve(options, frames_fd))


if __name__ == "__main__":
    sys.exit(main())
