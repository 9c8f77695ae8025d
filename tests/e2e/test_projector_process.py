"""The projector process of a real `shoal server`: it is a child of the server, a new one
takes over when it is killed (reads wait for it, then go on), and it outlives neither a
killed nor a stopped server."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.tasks_support import OptionServer, pgrep, served
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e


def projector_pids(data_dir: Path) -> list[int]:
    """The projector processes keeping the read models of ``data_dir``."""
    return [int(line.split()[0]) for line in pgrep(f"adapters.projector --data-dir {data_dir} ")]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def new_pool(c: httpx.Client) -> str:
    """Create a pool and read it back (a read of one's own write); its id."""
    r = c.post("/api/worker-pools", json={"name": rid("pool")})
    assert r.status_code == 201, r.text
    pool_id = str(r.json()["id"])
    assert c.get(f"/api/worker-pools/{pool_id}").status_code == 200
    return pool_id


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_killing_the_projector_starts_another_and_reads_recover(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    data = tmp_path / "data"
    with served(request, data, store) as srv, srv.client() as c:
        (first,) = projector_pids(data)
        assert srv.proc is not None and parent_of(first) == srv.proc.pid
        # Background work: when the cores are busy, the server and its steps come first.
        assert niceness(first) == niceness(srv.proc.pid) + 5
        # The database URL (and its password) reach it in its environment, never in the
        # command line every user of the machine can read.
        assert "postgresql" not in Path(f"/proc/{first}/cmdline").read_text()
        new_pool(c)
        os.kill(first, signal.SIGKILL)
        # A write while it is down: read back once the next projector has caught up.
        r = c.post("/api/worker-pools", json={"name": rid("meanwhile")})
        assert r.status_code in (201, 503), r.text  # 503: it took longer than read_wait_s
        (second,) = wait_until(lambda: [p for p in projector_pids(data) if p != first], 15,
                               what="a new projector process")
        assert parent_of(second) == srv.proc.pid
        names = wait_until(lambda: {p["name"] for p in c.get("/api/worker-pools").json()["items"]},
                           10, what="the pools")
        assert r.status_code != 201 or r.json()["name"] in names
        new_pool(c)
        wait_until(lambda: c.get("/api/health").json()["status"] == "ok", 10, what="health ok")
    text = "".join(srv.lines)
    assert "the projector process ended unexpectedly" in text and f'"pid":{first}' in text


def test_a_killed_server_leaves_no_projector_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = OptionServer(data)
    srv.start()
    try:
        (projector,) = projector_pids(data)
        srv.crash()
        wait_until(lambda: not projector_pids(data), 10, what="the projector process to exit")
        # Started again on the same folder, with one new projector.
        srv.start()
        (again,) = projector_pids(data)
        assert again != projector
    finally:
        srv.stop()


def test_a_clean_stop_ends_the_projector(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    with served(request, data) as srv:
        assert len(projector_pids(data)) == 1
        assert srv.stop() == 0
    assert not projector_pids(data)
    assert '"msg":"projector stopped"' in "".join(srv.lines)
