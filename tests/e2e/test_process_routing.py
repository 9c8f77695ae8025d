"""Where a step runs, through the real server: the built-in worker only for the default
pool with no workers at all (and only when enabled); otherwise the step waits for a
worker and never falls back to the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.tasks_support import (
    BUILT_IN,
    OptionServer,
    default_pool,
    events,
    lines_of,
    log,
    project,
    run,
    script,
    sh,
    step,
    task,
    wait_for_time,
    wait_step,
    wait_task,
)
from tests.helpers import rid

pytestmark = pytest.mark.e2e


def assert_waits_and_never_runs(c: httpx.Client, tid: str, step_name: str, *names: str) -> dict[str, Any]:
    """The step waits (its reason names one of ``names``), still waits a moment later,
    never ran anywhere; then cancelling the task ends it."""
    t = wait_step(c, tid, step_name, ("waiting",))
    reason = step(t, step_name)["reason"]
    assert any(n in reason for n in names), reason
    wait_for_time(0.6)
    later = task(c, tid)
    s = step(later, step_name)
    assert later["state"] == "executing" and s["state"] == "waiting", later
    assert s["worker_name"] is None and s["started"] is None
    text = log(c, tid)
    assert f"{step_name} | Running on" not in text and "never" not in lines_of(text, step_name)
    assert reason in text, "the wait is visible in the task log"
    assigned = [e for e in events(c, "Task.StepAssigned") if e["aggregate_id"] == tid]
    assert not [e for e in assigned if e["data"]["step"] == step_name]
    r = c.post(f"/api/tasks/{tid}/cancel")
    assert r.status_code == 200, r.text
    done = wait_task(c, tid)
    assert done["state"] == "cancelled" and step(done, step_name)["state"] == "cancelled"
    return done


def test_a_non_default_pool_without_workers_waits(srv: OptionServer) -> None:
    with srv.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("empty")}).json()
        by_id = script(c, "echo never", worker_pool_id=pool["id"])
        assert_waits_and_never_runs(c, by_id["id"], "Run script", pool["name"])
        # A process step naming the pool by name: the step before it still runs on the server.
        p = project(c, rid("mixed"), [sh("here", "echo here"),
                                      sh("there", "echo never", worker_pool_id=pool["name"])])
        t = run(c, p["id"])
        done = assert_waits_and_never_runs(c, t["id"], "there", pool["name"])
    assert step(done, "here")["state"] == "success" and step(done, "here")["worker_name"] == BUILT_IN


def test_a_pool_whose_workers_cannot_take_the_step_waits(srv: OptionServer) -> None:
    with srv.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("remote")}).json()
        worker = c.post("/api/workers", json={"name": rid("w"), "pool_ids": [pool["id"]],
                                              "comms_style": "polling"}).json()
        t = script(c, "echo never", worker_pool_id=pool["name"])
        assert_waits_and_never_runs(c, t["id"], "Run script", pool["name"], worker["name"])


def test_a_worker_in_the_default_pool_retires_the_built_in_worker(srv: OptionServer) -> None:
    with srv.client() as c:
        default = default_pool(c)
        worker = c.post("/api/workers", json={"name": rid("dw"), "pool_ids": [default["id"]],
                                              "comms_style": "listening"}).json()
        try:
            t = script(c, "echo never")
            assert_waits_and_never_runs(c, t["id"], "Run script", default["name"], worker["name"])
            # A disabled worker still counts: the server does not take the step back.
            r = c.patch(f"/api/workers/{worker['id']}", json={"is_disabled": True})
            assert r.status_code == 200, r.text
            t = script(c, "echo never")
            assert_waits_and_never_runs(c, t["id"], "Run script", default["name"], worker["name"])
        finally:
            assert c.delete(f"/api/workers/{worker['id']}").status_code == 204
        back = wait_task(c, script(c, "echo back-home")["id"])
        assert back["state"] == "success" and back["steps"][0]["worker_name"] == BUILT_IN


def test_with_the_built_in_worker_disabled_a_step_fails_at_once(srv: OptionServer, ) -> None:
    with srv.client() as c:
        assert c.get("/api/configuration/built-in-worker").json()["enabled"] is True
        r = c.patch("/api/configuration/built-in-worker", json={"enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False, r.text
        try:
            assert c.get("/api/configuration/built-in-worker").json()["enabled"] is False
            t = wait_task(c, script(c, "echo never")["id"], timeout=5)
            text = log(c, t["id"])
            # Steps that run no user code do not need the built-in worker.
            p = project(c, rid("no-code"), [{"name": "gate", "action": "manual_intervention",
                                             "instructions": "ok?"}])
            gated = wait_step(c, run(c, p["id"])["id"], "gate", ("awaiting_intervention",))
            c.post(f"/api/tasks/{gated['id']}/cancel")
        finally:
            c.patch("/api/configuration/built-in-worker", json={"enabled": True})
        again = wait_task(c, script(c, "echo enabled-again")["id"])
    (s,) = t["steps"]
    assert t["state"] == "failed" and s["state"] == "failed"
    assert s["worker_name"] is None and s["exit_code"] is None
    assert "built-in worker is disabled" in s["reason"] and "add a worker" in s["reason"]
    assert "never" not in lines_of(text, "Run script") and "Running on" not in text
    assert again["state"] == "success" and again["steps"][0]["worker_name"] == BUILT_IN
