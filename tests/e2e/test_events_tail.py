"""`shoal events tail`: the audit log as JSON lines from --after on, followed live, and
picked up where it was when the server restarts (nothing skipped, nothing twice)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import SHOAL
from tests.e2e.tasks_support import OptionServer, free_port
from tests.helpers import rid

pytestmark = pytest.mark.e2e


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[OptionServer]:
    """A server of the test's own on a fixed port (it gets restarted)."""
    server = OptionServer(tmp_path / "data", extra=["--port", str(free_port())])
    try:
        yield server.start()
    finally:
        server.stop()


def tail(srv: OptionServer, *extra: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """`shoal events tail` running, its stdout lines arriving in a queue."""
    proc = subprocess.Popen(
        [SHOAL, "events", "tail", "--server", srv.url, "--api-key", srv.admin_key, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def until_pool(lines: queue.Queue[str], name: str, seen: list[dict]) -> None:
    """Read lines into ``seen`` until the event that created pool ``name``."""
    while True:
        item = json.loads(lines.get(timeout=30))
        seen.append(item)
        if item["type"] == "WorkerPool.Created" and item["data"].get("name") == name:
            return


def test_tail_follows_the_log_and_resumes_after_a_restart(srv: OptionServer) -> None:
    with srv.client() as c:
        first = rid("before")
        assert c.post("/api/worker-pools", json={"name": first}).status_code == 201
    proc, lines = tail(srv)
    seen: list[dict] = []
    try:
        until_pool(lines, first, seen)  # the log so far, from its start
        with srv.client() as c:
            live = rid("live")
            assert c.post("/api/worker-pools", json={"name": live}).status_code == 201
        until_pool(lines, live, seen)  # then live
        srv.stop()
        srv.start()
        with srv.client() as c:
            after = rid("after")
            assert c.post("/api/worker-pools", json={"name": after}).status_code == 201
        until_pool(lines, after, seen)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    positions = [item["position"] for item in seen]
    assert positions == sorted(set(positions)), "in order, none twice"
    assert positions == list(range(positions[0], positions[-1] + 1)), "none skipped"
    assert len(err.strip().splitlines()) == 1 and "reconnecting" in err, err
    assert err.startswith("shoal events: "), err


def test_after_starts_past_that_position(srv: OptionServer) -> None:
    with srv.client() as c:
        for _ in range(3):
            assert c.post("/api/worker-pools", json={"name": rid("p")}).status_code == 201
        last = rid("last")
        assert c.post("/api/worker-pools", json={"name": last}).status_code == 201
        page = c.get("/api/events", params={"limit": 1000}).json()["items"]
    cut = page[len(page) // 2]["position"]
    proc, lines = tail(srv, "--after", str(cut))
    seen: list[dict] = []
    try:
        until_pool(lines, last, seen)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert seen[0]["position"] == cut + 1
