"""The built-in worker process at the pipe: the test plays the server, frame by frame,
against a real ``python -m agent.builtin``; and the server's reader against bad frames."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from adapters.dispatch.builtinchild import Child
from agent.pipe import FrameReader, decode, encode, request_to_wire
from tests.agent.support import group_exists
from tests.helpers import wait_until
from tests.integration.builtin_support import config, step, step_folders

pytestmark = pytest.mark.integration


class Peer:
    """A real built-in worker process, and the server's end of its pipe."""

    def __init__(self, root: Path) -> None:
        self.stderr_path = root / "worker.log"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.builtin", "--packages", str(root / "packages"),
                 "--inbox", str(root / "inbox"), "--kill-grace", "0.5"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            )
        self._reader = FrameReader()
        self._frames: list[dict[str, Any]] = []
        assert self.next()["op"] == "ready"

    def send(self, frame: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame if isinstance(frame, bytes) else encode(frame))
        self.proc.stdin.flush()

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame from the worker."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError("no frame from the worker")
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                raise EOFError("the worker closed its end")
            self._frames += [decode(body) for body in self._reader.feed(data)]
        return self._frames.pop(0)

    def until(self, op: str, answer: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Frames up to the first ``op``; asks on the way are answered yes."""
        seen = []
        while True:
            frame = self.next()
            seen.append(frame)
            if frame["op"] == op:
                return frame, seen
            if answer and "q" in frame:
                self.send({"op": "answer", "q": frame["q"], "ok": True})

    def logged(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with suppress(BrokenPipeError):
                    pipe.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    p = Peer(tmp_path)
    try:
        yield p
    finally:
        p.close()


def run_frame(root: Path, run_id: int, script: str) -> dict[str, Any]:
    return {"op": "run", "id": run_id, "request": request_to_wire(step(root, script)), "artifacts": False}


@pytest.mark.parametrize("how", ["end of file", "SIGTERM"])
def test_when_the_server_goes_the_worker_aborts_its_steps_and_exits(
    peer: Peer, tmp_path: Path, how: str
) -> None:
    peer.send(run_frame(tmp_path, 1, "echo up; sleep 300 & wait"))
    started, _ = peer.until("started")
    peer.until("log")
    assert group_exists(started["pid"]) and len(step_folders(tmp_path)) == 1
    if how == "SIGTERM":
        peer.proc.send_signal(signal.SIGTERM)
    else:
        assert peer.proc.stdin is not None
        peer.proc.stdin.close()
    assert peer.proc.wait(10) == 0
    wait_until(lambda: not group_exists(started["pid"]), 5, what="the step's processes to be gone")
    assert step_folders(tmp_path) == []
    if how == "SIGTERM":
        assert peer.until("aborted", answer=False)[0]["id"] == 1


def test_sigint_does_not_end_the_worker(peer: Peer, tmp_path: Path) -> None:
    """A Ctrl-C reaches the whole process group; the server ends the worker itself."""
    peer.proc.send_signal(signal.SIGINT)
    peer.send(run_frame(tmp_path, 1, "trap 'echo got INT' INT; kill -INT $$; echo done"))
    finished, seen = peer.until("finished")
    assert finished["outcome"] == "success"
    texts = [line[2] for frame in seen if frame["op"] == "log" for line in frame["lines"]]
    assert texts == ["got INT", "done"], "the step's processes still take SIGINT as usual"


def test_frames_leave_on_a_private_descriptor(peer: Peer) -> None:
    pid = peer.proc.pid
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2"), \
        "stdout is stderr: a stray print cannot reach the frame stream"


def test_bad_frames_are_refused_and_the_worker_carries_on(peer: Peer, tmp_path: Path) -> None:
    peer.send(b"\x00\x00\x00\x03abc")
    peer.send({"op": "dance"})
    peer.send({"op": "run", "id": "one"})
    peer.send({"op": "cancel", "id": 99})  # no such step: nothing to do
    peer.send({"op": "answer", "q": 12345, "ok": True})  # answers nothing asked
    bad = run_frame(tmp_path, 1, "true")
    bad["request"]["syntax"] = "perl"
    peer.send(bad)
    error = peer.next()
    assert error["op"] == "error" and error["id"] == 1 and "unknown script syntax" in error["error"]
    peer.send(run_frame(tmp_path, 1, "touch /tmp/never"))  # an id used before: never run
    peer.send(run_frame(tmp_path, 2, "echo fine"))
    finished, seen = peer.until("finished")
    assert finished["id"] == 2 and finished["outcome"] == "success"
    assert {frame.get("id") for frame in seen} == {2}
    wait_until(lambda: peer.logged().count("refused a frame from the server") >= 5, 5,
               what="the refusals to be logged")
    assert "id 1 was used before" in peer.logged()
    assert peer.proc.poll() is None


def test_a_corrupt_length_ends_the_worker_and_its_steps(peer: Peer, tmp_path: Path) -> None:
    peer.send(run_frame(tmp_path, 1, "sleep 300 & wait"))
    started, _ = peer.until("started")
    peer.send((2**31).to_bytes(4, "big") + b"{}")
    assert peer.proc.wait(10) == 0
    wait_until(lambda: not group_exists(started["pid"]), 5, what="the step's processes to be gone")
    assert step_folders(tmp_path) == []
    assert "the pipe from the server is corrupt" in peer.logged()


def test_the_servers_reader_refuses_bad_frames_from_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> Child:
        child = Child(config(tmp_path), None, asyncio.get_running_loop())
        for frame in (b"\x00\x00\x00\x01[", encode({"op": "dance"}), encode({"op": "log", "id": "x"}),
                      encode({"op": "fetch", "q": 1, "sha256": "0" * 64, "path": "/etc/passwd"}),
                      encode({"op": "drop", "q": "all"}), encode({"op": "ready", "protocol": 99}),
                      encode({"op": "ready", "protocol": 1})):
            child.pipe_data_received(1, frame)
        # Frames of a step the server does not follow are dropped (their asks answered no).
        child.pipe_data_received(1, encode({"op": "log", "id": 7, "q": 3, "lines": []}))
        child.pipe_data_received(1, (2**31).to_bytes(4, "big"))
        child.pipe_data_received(1, encode({"op": "dance"}))  # after a corrupt length: ignored
        return child

    with caplog.at_level(logging.WARNING, logger="shoal.builtin"):
        child = asyncio.run(body())
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused a frame")]
    assert len(refusals) == 6, refusals
    reasons = [getattr(r, "reason", "") for r in caplog.records]
    assert any("partial file of the package cache" in reason for reason in reasons)
    assert "ready: sent twice" in reasons
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert isinstance(child.ready.exception(), RuntimeError), "protocol 99 is not this server's"
