"""State, positions and read models survive a restart; the live stream resumes exactly."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.server import SHOAL, ServerProcess, drop_schema, schema_url
from tests.helpers import rid
from tests.sshworkers import SSH_JSON

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own (it gets restarted)."""
    base = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    url = schema_url(base) if base else None
    proc = ServerProcess(tmp_path / "data", url)
    try:
        yield proc
    finally:
        proc.stop()
        if base and url:
            drop_schema(base, url)


def _sse(url: str, key: str, count: int, last_event_id: int | None = None) -> list[dict]:
    """Read ``count`` events from the stream, then hang up."""
    headers = {"X-Api-Key": key}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    got: list[dict] = []
    with httpx.stream("GET", f"{url}/api/events/stream", headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        ident = None
        for line in r.iter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                item = orjson.loads(line[6:])
                assert item["position"] == ident
                got.append(item)
                if len(got) == count:
                    break
    return got


def test_restart_keeps_state_positions_and_read_models(fresh: ServerProcess) -> None:
    fresh.start()
    key = fresh.admin_key
    with fresh.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("keep")}).json()
        c.post("/api/workers", json={"name": rid("w"), "pool_ids": [pool["id"]], "comms_style": "polling"})
        workers = c.get("/api/workers").json()
        pools = c.get("/api/worker-pools").json()
        events = c.get("/api/events", params={"limit": 1000}).json()["items"]
        position = c.get("/api/health").json()["position"]
    assert fresh.stop() == 0

    fresh.start()
    assert fresh.admin_key == key, "a restart must not make a new administrator key"
    assert not any("shown once" in line for line in fresh.lines)
    with fresh.client(key) as c:
        assert c.get("/api/health").json()["position"] == position
        assert c.get("/api/workers").json() == workers
        assert c.get("/api/worker-pools").json() == pools
        assert c.get("/api/events", params={"limit": 1000}).json()["items"] == events
        installs = c.get("/api/events", params={"type": "Installation.Installed"}).json()["items"]
        assert len(installs) == 1
        # New events continue the same sequence.
        r = c.post("/api/worker-pools", json={"name": rid("after")})
        assert int(r.headers["X-Shoal-Position"]) > position


def test_stream_follows_live_and_resumes_without_gap_or_duplicate(fresh: ServerProcess) -> None:
    fresh.start()
    key = fresh.admin_key
    with fresh.client() as c:
        start = c.get("/api/health").json()["position"]

    received: list[dict] = []
    reader = threading.Thread(target=lambda: received.extend(_sse(fresh.url, key, 6, start)))
    reader.start()
    names = [rid("live") for _ in range(3)]
    with fresh.client() as c:
        for name in names:
            assert c.post("/api/worker-pools", json={"name": name}).status_code == 201
    reader.join(15)
    assert not reader.is_alive()
    # Each create is a NameIndex.Created and a WorkerPool.Created, in that order.
    assert [e["data"].get("name") for e in received if e["type"] == "WorkerPool.Created"] == names
    positions = [e["position"] for e in received]
    assert positions == sorted(positions) and positions[0] > start

    # Hang up after three, reconnect with Last-Event-ID: the rest, no gap, no repeat.
    first = _sse(fresh.url, key, 3, start)
    rest = _sse(fresh.url, key, 3, first[-1]["position"])
    assert [e["position"] for e in first + rest] == positions

    # And across a restart of the server.
    fresh.stop()
    fresh.start()
    again = _sse(fresh.url, key, 3, first[-1]["position"])
    assert [e["position"] for e in again] == positions[3:]


def test_replay_rebuilds_and_verify_finds_a_corrupted_view(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    with server.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("v")}).json()
        c.post("/api/workers", json={"name": "verify-me", "pool_ids": [pool["id"]], "comms_style": "ssh",
                                     "ssh": SSH_JSON})
    server.stop()
    data = str(tmp_path / "data")

    ok = subprocess.run([SHOAL, "replay", "--data-dir", data, "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "identical" in ok.stdout

    with sqlite3.connect(tmp_path / "data" / "views.db") as db:
        db.execute("UPDATE rm_workers SET name = 'tampered' WHERE name = 'verify-me'")
    bad = subprocess.run([SHOAL, "replay", "--data-dir", data, "--verify"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "tampered" in bad.stderr and "verify-me" in bad.stderr

    fixed = subprocess.run([SHOAL, "replay", "--data-dir", data], capture_output=True, text=True)
    assert fixed.returncode == 0 and "rebuilt" in fixed.stdout
    again = subprocess.run([SHOAL, "replay", "--data-dir", data, "--verify"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr

    server.start()
    with server.client() as c:
        assert [w["name"] for w in c.get("/api/workers").json()["items"]] == ["verify-me"]
    server.stop()
