"""The projector process itself (python -m adapters.projector) against raw frames: it
reports ready with its position and progress after a wake, exits on end of file and on
SIGTERM, ignores SIGINT, and keeps a second projector of the same SQLite data folder
waiting until it has gone."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.store import open_application
from agent.pipe import FrameReader, decode, encode
from domain.app import Shoal
from tests.helpers import TESTER, rid

pytestmark = pytest.mark.integration


class RawProjector:
    """A projector process started by hand, its frames read with a deadline."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_DATABASE_URL"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.projector", "--data-dir", str(data_dir),
             "--poll-interval", "30"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self._reader = FrameReader()
        self._frames: list[dict[str, Any]] = []

    def frame(self, timeout: float) -> dict[str, Any] | None:
        """The next frame, or None when none comes within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                return None
            self._frames += [decode(body) for body in self._reader.feed(data)]
        return self._frames.pop(0)

    def ready(self, timeout: float) -> dict[str, Any] | None:
        """The ``ready`` frame (after the ``progress`` of its catch-up), or None."""
        deadline = time.monotonic() + timeout
        while (frame := self.frame(max(0.0, deadline - time.monotonic()))) is not None:
            if frame["op"] == "ready":
                return frame
            assert frame["op"] == "progress"
        return None

    def send(self, frame: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(frame))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Shoal]:
    app = open_application(tmp_path / "data", None)
    app.install()
    yield app
    app.close()


@pytest.fixture
def projectors(tmp_path: Path) -> Iterator[list[RawProjector]]:
    started: list[RawProjector] = []
    yield started
    for projector in started:
        projector.end()


def start(projectors: list[RawProjector], data_dir: Path) -> RawProjector:
    projector = RawProjector(data_dir)
    projectors.append(projector)
    return projector


def test_it_says_ready_at_the_end_of_the_log_and_reports_progress_after_a_wake(
    tmp_path: Path, sqlite_app: Shoal, projectors: list[RawProjector]
) -> None:
    projector = start(projectors, tmp_path / "data")
    ready = projector.ready(30)
    assert ready is not None
    assert ready["pid"] == projector.proc.pid
    assert ready["position"] == sqlite_app.recorder.max_notification_id()

    saved = sqlite_app.create_pool(name=rid("pool"), actor=TESTER)
    projector.send({"op": "wake", "position": saved.position})
    assert projector.frame(5) == {"op": "progress", "position": saved.position}

    projector.send({"op": "nonsense"})  # refused and logged; it carries on
    projector.close_stdin()
    assert projector.proc.wait(10) == 0


def test_sigterm_ends_it_and_sigint_does_not(
    tmp_path: Path, sqlite_app: Shoal, projectors: list[RawProjector]
) -> None:
    projector = start(projectors, tmp_path / "data")
    assert projector.ready(30) is not None
    projector.proc.send_signal(signal.SIGINT)  # a Ctrl-C in the server's terminal
    time.sleep(0.3)
    assert projector.proc.poll() is None
    projector.proc.send_signal(signal.SIGTERM)
    assert projector.proc.wait(10) == 0


def test_a_second_projector_of_a_data_folder_waits_for_the_first_to_exit(
    tmp_path: Path, sqlite_app: Shoal, projectors: list[RawProjector]
) -> None:
    first = start(projectors, tmp_path / "data")
    assert first.ready(30) is not None
    second = start(projectors, tmp_path / "data")
    assert second.frame(1.5) is None, "two writers of views.db at once"
    first.close_stdin()
    assert first.proc.wait(10) == 0
    assert second.ready(15) is not None
