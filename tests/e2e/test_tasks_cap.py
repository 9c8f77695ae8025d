"""Server options that shape how tasks run: the task cap (`--task-cap 1`: one task at a
time, in queue order; a queued task can be cancelled before it ever runs) and the worker
wait limit (`--worker-wait-limit 1`: a step no worker takes fails once it is over).
Queued tasks start without waiting for the read models to show them (SQLite)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.tasks_support import (
    OptionServer,
    lines_of,
    log,
    parse_time,
    pgrep,
    script,
    served,
    task,
    wait_task,
)
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptionServer]:
    options = ["--task-cap", "1", "--worker-wait-limit", "1"]
    with served(request, tmp_path_factory.mktemp("shoal"), extra=options) as s:
        yield s


def test_cap_one_runs_one_task_at_a_time_in_queue_order(srv: OptionServer) -> None:
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        with srv.client() as w:
            while not stop.is_set():
                total = w.get("/api/tasks", params={"state": "executing"}).json()["total"]
                most = max(most, total)
                stop.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with srv.client() as c:
            queued = [script(c, f"echo task-{i}; sleep 0.6") for i in range(3)]
            waiting = task(c, queued[2]["id"])
            done = [wait_task(c, t["id"], timeout=20) for t in queued]
    finally:
        stop.set()
        watcher.join(10)
    assert waiting["state"] == "queued" and waiting["started"] is None
    assert [t["state"] for t in done] == ["success"] * 3
    assert most == 1, f"{most} tasks were executing at once with --task-cap 1"
    starts = [parse_time(t["started"]) for t in done]
    finishes = [parse_time(t["finished"]) for t in done]
    assert starts == sorted(starts), "tasks start in queue order"
    for earlier_end, later_start in zip(finishes, starts[1:], strict=False):
        assert later_start >= earlier_end, "the next task starts only after the previous one ended"


def test_a_queued_task_can_be_cancelled_before_it_runs(srv: OptionServer) -> None:
    with srv.client() as c:
        blocker = script(c, "sleep 1")
        victim = script(c, "echo should-never-run")
        r = c.post(f"/api/tasks/{victim['id']}/cancel")
        assert r.status_code == 200, r.text
        assert wait_task(c, blocker["id"])["state"] == "success"
        after = script(c, "echo next-in-line")
        assert wait_task(c, after["id"])["state"] == "success"
        gone = wait_task(c, victim["id"])
        text = log(c, victim["id"])
    assert gone["state"] == "cancelled"
    assert gone["started"] is None and gone["steps"][0]["started"] is None
    # An ended task keeps no step pending (as when a running task is cancelled: the steps
    # it did not reach end as skipped).
    assert gone["steps"][0]["state"] in ("cancelled", "skipped"), gone["steps"][0]
    assert "should-never-run" not in text and "Running on" not in text


def test_a_step_no_worker_takes_fails_after_the_wait_limit(srv: OptionServer) -> None:
    with srv.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("nobody-home")}).json()
        t = script(c, "echo never", worker_pool_id=pool["id"])
        done = wait_task(c, t["id"], timeout=15)
        text = log(c, t["id"])
        after = wait_task(c, script(c, "echo next")["id"])
    (s,) = done["steps"]
    assert done["state"] == "failed" and s["state"] == "failed"
    assert pool["name"] in s["reason"] and "1s" in s["reason"], s["reason"]
    assert s["worker_name"] is None and "never" not in lines_of(text, "Run script")
    assert after["state"] == "success", "the slot the waiting task held is free again"


def test_queued_tasks_start_in_order_while_the_read_models_are_held_up(
    srv: OptionServer, tmp_path: Path
) -> None:
    """With SQLite the server is the store's only writer, so it knows every queued task
    the moment it is saved: a task starts at once, not once the projector has shown it
    as queued, and still in queue order. A task cancelled meanwhile is passed over."""
    out = tmp_path / "ran.txt"
    (projector,) = (int(line.split()[0]) for line in pgrep(f"adapters.projector --data-dir {srv.data_dir} "))
    with srv.client() as c:
        os.kill(projector, signal.SIGSTOP)
        try:
            first = script(c, f"sleep 1.5; echo first >> {out}")
            victim = script(c, f"echo victim >> {out}")
            # Recorded at once; the answer would wait for the read models, so it is not awaited.
            with contextlib.suppress(httpx.ReadTimeout):
                c.post(f"/api/tasks/{victim['id']}/cancel", timeout=0.5)
            last = script(c, f"echo last >> {out}")
            ran = wait_until(lambda: out.exists() and out.read_text().split()[-1:] == ["last"],
                             15, what="the queued tasks to run while the projector is stopped")
            assert ran and out.read_text().split() == ["first", "last"]
            # The log's read model is held up too: a clear 503, not a log cut short (or a
            # 404 for a task that exists).
            with srv.client(patient=False) as impatient:
                r = impatient.get(f"/api/tasks/{first['id']}/log")
            assert r.status_code == 503 and "read models are behind" in r.text, (r.status_code, r.text)
            assert r.headers["retry-after"] == "1", "says when to ask again"
        finally:
            os.kill(projector, signal.SIGCONT)
        states = [wait_task(c, t["id"])["state"] for t in (first, victim, last)]
    assert states == ["success", "cancelled", "success"]
