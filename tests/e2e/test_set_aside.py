"""An event the read models cannot apply (here: one a newer version of Shoal wrote) is set
aside, through the real server and projector processes: reads and steps go on, health
says so, and `shoal replay` names it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.store import open_application
from tests.e2e.server import SHOAL, ServerProcess
from tests.e2e.tasks_support import script, served, wait_task
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e

TOPIC = "domain.pools:WorkerPool.Renumbered"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_event_the_read_models_cannot_apply_is_set_aside_and_named(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    with served(request, tmp_path / "data", backend) as server:
        unknown = write_an_event_of_a_newer_version(server)
        with server.client() as c:
            # The count is read from the read models; the position is the projector's
            # last word to the server, which may come a moment later.
            health = wait_until(
                lambda: (h := c.get("/api/health").json())["skipped_events"]
                and h["position"] >= unknown and h, 10, what="the event to be set aside",
            )
            assert health["status"] == "degraded" and health["skipped_events"] == 1
            # Reads wait for the read models to include each write: they got past it.
            name = rid("after")
            assert c.post("/api/worker-pools", json={"name": name}).status_code == 201
            assert name in [p["name"] for p in c.get("/api/worker-pools").json()["items"]]
            assert wait_task(c, script(c, "echo still running")["id"])["state"] == "success"
        assert any("was set aside" in line and TOPIC in line for line in server.lines)
        server.stop()

        where = ["--database-url", server.database_url] if server.database_url \
            else ["--data-dir", str(server.data_dir)]
        replay = subprocess.run([SHOAL, "replay", *where], capture_output=True, text=True)
        assert replay.returncode == 1, replay.stderr
        assert "rebuilt" in replay.stdout
        assert "1 event could not be applied and was set aside" in replay.stderr
        [named] = [line for line in replay.stderr.splitlines() if f"position {unknown} " in line]
        assert f"position {unknown} {TOPIC} in agent_credentials, " in named
        assert ", audit, " in named and ", tasks" in named and "Failed to resolve topic" in named


def write_an_event_of_a_newer_version(server: ServerProcess) -> int:
    """Append to the server's store, as a newer version of Shoal sharing it would, an
    event this version does not know; its position."""
    app = open_application(server.data_dir, server.database_url)
    try:
        app.recorder.insert_events([StoredEvent(
            originator_id=uuid4(), originator_version=1, topic=TOPIC, state=b"{}",
        )])
        return int(app.recorder.max_notification_id() or 0)
    finally:
        app.close()
