"""One built-in worker process, as the server holds it: the pipe's two ends, the steps it
runs, and the server's answers to its asks (packages, artifacts). Its life and the steps'
coroutines are adapters/dispatch/builtin.py's; this module sorts what the process writes.

The pipe's reader never waits: it puts each step's frames into that step's queue, and
starts a task per package fetch, so that one step's slow work never holds up another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.framedchild import FramedChild
from agent.artifacts import ArtifactNotReturned
from agent.pipe import (
    PROTOCOL,
    Frame,
    MalformedFrame,
    decode,
    encode,
    number,
    request_to_wire,
    text,
)
from agent.ports import Artifact, ArtifactSink, PackageSource, StepRequest
from domain.artifacts import is_sha256

if TYPE_CHECKING:
    from adapters.dispatch.builtin import BuiltInWorkerConfig

log = logging.getLogger("shoal.builtin")

GONE = "gone"  # put into a step's queue by the server itself: the process ended
_STEP_OPS = frozenset({"started", "log", "artifact", "finished", "aborted", "error"})
_ENDS = frozenset({"finished", "aborted", "error"})


class Run:
    """One step sent to the process: its frames, in order, and whether it has ended there."""

    __slots__ = ("ended", "frames", "id", "pid", "task_id")

    def __init__(self, run_id: int, task_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.id = run_id
        self.task_id = task_id
        self.pid: int | None = None  # the step's process (group) id, once started
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        # Set when the process has finished with the step (its last frame arrived), or died.
        self.ended: asyncio.Future[None] = loop.create_future()

    def put(self, frame: Frame) -> None:
        """Queue a frame for the step's coroutine."""
        self.frames.put_nowait(frame)

    def end(self) -> None:
        """No more frames will come for this step."""
        if not self.ended.done():
            self.ended.set_result(None)


class Child(FramedChild):
    """The process's pipes (see the module docstring and adapters/framedchild.py).
    ``ready`` is set by its ``ready`` frame."""

    def __init__(
        self, config: BuiltInWorkerConfig, packages: PackageSource | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(loop, "the built-in worker process", log)
        self._config = config
        self._packages = packages
        self._inbox = config.inbox.absolute()
        self._packages_root = config.packages_root.absolute()
        self.runs: dict[int, Run] = {}
        self.buried = False  # what its steps left has been cleaned up
        self.gone_reason = ""  # once buried: why its steps ended
        self._next_id = 0
        self._fetches: dict[int, asyncio.Task[None]] = {}

    def answer(self, ask: Frame, error: str | None = None) -> None:
        """Answer the process's ask: yes, or no with the reason."""
        q = ask.get("q")
        self.send({"op": "answer", "q": q, "ok": True} if error is None
                  else {"op": "answer", "q": q, "ok": False, "error": error})

    # -- steps -----------------------------------------------------------------------------

    def begin(self, request: StepRequest, artifacts: bool) -> Run:
        """Send a step to the process."""
        self._next_id += 1
        run_id = self._next_id
        data = encode({"op": "run", "id": run_id, "request": request_to_wire(request),
                       "artifacts": artifacts})
        run = Run(run_id, request.task_id, self._loop)
        self.runs[run_id] = run
        if self.buried:  # too late to run anything (the caller checked just before)
            run.put({"op": GONE, "reason": self.gone_reason})
            run.end()
        self.write(data)
        return run

    def end(self, run: Run) -> None:
        """The server is done with the step; files of artifacts it never took go."""
        self.runs.pop(run.id, None)
        while not run.frames.empty():
            frame = run.frames.get_nowait()
            if frame["op"] == "artifact":
                self._unlink(frame.get("path"))

    async def artifact(self, frame: Frame, on_artifact: ArtifactSink | None) -> None:
        """Hand a returned artifact to ``on_artifact`` and answer; its file is removed."""
        path = self._inbox_file(frame.get("path"))
        try:
            if on_artifact is None:
                raise ArtifactNotReturned("the server did not ask for artifacts")
            await on_artifact(Artifact(
                name=text(frame, "name"), path=path, size=number(frame, "size"),
                sha256=text(frame, "sha256"),
            ))
        except ArtifactNotReturned as exc:
            self.answer(frame, str(exc))
        else:
            self.answer(frame)
        finally:
            _discard(path)

    def cancel_fetches(self) -> None:
        """Stop fetching packages for a process that is gone."""
        for task in list(self._fetches.values()):
            task.cancel()

    # -- reading ---------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        """A frame: ``ready``, a step's, or an ask."""
        try:
            frame = decode(body)
            op = frame["op"]
            if op in _STEP_OPS:
                self._to_step(op, frame)
            elif op == "fetch":
                self._fetch(frame)
            elif op == "drop":
                task = self._fetches.get(number(frame, "q"))
                if task is not None:
                    task.cancel()
            elif op == "ready":
                refused = self.refuse_ready(frame, PROTOCOL)
                if refused is not None:
                    self.ready.set_exception(RuntimeError(refused))
                else:
                    self.ready.set_result(None)
            else:
                raise MalformedFrame(f"unknown op {op!r}")
        except MalformedFrame as exc:
            log.warning("refused a frame from the built-in worker process",
                        extra={"pid": self.pid, "reason": str(exc)})

    def _to_step(self, op: str, frame: Frame) -> None:
        run = self.runs.get(number(frame, "id"))
        if run is None:
            # A step the server no longer follows (its abort was not confirmed in time):
            # answer its asks so the process does not wait, and remove what it handed over.
            if op == "artifact":
                self._unlink(frame.get("path"))
            if "q" in frame:
                self.answer(frame, "the server no longer follows this step")
            return
        if op == "started":
            run.pid = number(frame, "pid")  # now, not when the step reads it: for clean-up
        run.put(frame)
        if op in _ENDS:
            run.end()

    def _fetch(self, frame: Frame) -> None:
        q = number(frame, "q")
        sha256 = text(frame, "sha256")
        path = Path(text(frame, "path"))
        if not is_sha256(sha256) or path.parent != self._packages_root \
                or not path.name.startswith(f".{sha256}.") or not path.name.endswith(".part"):
            raise MalformedFrame("fetch: needs a SHA-256 and a partial file of the package cache")
        task = self._loop.create_task(self._fetch_one(frame, sha256, path))
        self._fetches[q] = task
        task.add_done_callback(lambda _: self._fetches.pop(q, None))

    async def _fetch_one(self, frame: Frame, sha256: str, path: Path) -> None:
        try:
            if self._packages is None:
                raise LookupError("this server has no package store")
            await self._packages.fetch(sha256, path)
        except asyncio.CancelledError:
            _discard(path)  # the process gave up on it, or died
            raise
        except Exception as exc:
            self.answer(frame, str(exc) or type(exc).__name__)
        else:
            self.answer(frame)

    def _inbox_file(self, raw: Any) -> Path:
        path = Path(raw) if isinstance(raw, str) else None
        if path is None or path.parent != self._inbox:
            raise MalformedFrame("artifact: the path is not a file of the artifact inbox")
        return path

    def _unlink(self, raw: Any) -> None:
        with contextlib.suppress(MalformedFrame):
            _discard(self._inbox_file(raw))


def _discard(path: Path) -> None:
    # One unlink: quick enough for the event loop, and it must happen even when cancelled.
    path.unlink(missing_ok=True)
