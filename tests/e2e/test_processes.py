"""Projects with deployment processes through the real server: parallel steps, run
conditions, timeouts inside a process, and the task list filtered by project."""

from __future__ import annotations

import pytest

from tests.e2e.tasks_support import (
    BUILT_IN,
    OptionServer,
    lines_of,
    log,
    project,
    run,
    sh,
    step,
    wait_task,
)
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e

STAMPED = "date +%s.%N; sleep 1; date +%s.%N"


def test_process_is_stored_and_a_run_is_a_deployment_task(srv: OptionServer) -> None:
    steps = [sh("build", "echo built"), sh("ship", "echo shipped", condition="always", timeout_s=30),
             sh("rollback", "echo must-not-run", condition="failure")]
    with srv.client() as c:
        p = project(c, rid("shop"), steps)
        stored = c.get(f"/api/projects/{p['id']}").json()
        t = run(c, p["id"])
        done = wait_task(c, t["id"])
        mine = c.get("/api/tasks", params={"project": p["id"]}).json()
        text = log(c, t["id"])
    assert [(s["name"], s["condition"], s["timeout_s"]) for s in stored["steps"]] == [
        ("build", "success", None), ("ship", "always", 30), ("rollback", "failure", None)]
    assert stored["steps"][0]["start"] == "after_previous"
    assert (t["kind"], t["project_id"], t["name"], t["state"]) == ("deployment", p["id"], p["name"], "queued")
    assert done["state"] == "success"
    assert [(s["name"], s["state"], s["worker_name"]) for s in done["steps"]] == [
        ("build", "success", BUILT_IN), ("ship", "success", BUILT_IN), ("rollback", "skipped", None)]
    assert mine["total"] == 1 and mine["items"][0]["id"] == t["id"]
    assert lines_of(text, "build") == ["built"] and lines_of(text, "ship") == ["shipped"]
    assert text.index("build | Step success") < text.index("ship | Running on")
    assert "must-not-run" not in text, "nothing failed, so the failure-only step is skipped"


def test_with_previous_steps_run_at_the_same_time(srv: OptionServer) -> None:
    steps = [
        sh("left", STAMPED),
        sh("right", STAMPED, start="with_previous"),
        sh("after", 'echo "after"'),
    ]
    with srv.client() as c:
        p = project(c, rid("parallel"), steps)
        done = wait_task(c, run(c, p["id"])["id"])
        text = log(c, done["id"])
    assert done["state"] == "success", text
    (l0, l1), (r0, r1) = ([float(x) for x in lines_of(text, name)] for name in ("left", "right"))
    assert l1 - l0 >= 1 and r1 - r0 >= 1
    assert max(l0, r0) < min(l1, r1), f"no overlap: left {l0}-{l1}, right {r0}-{r1}"
    last = step(done, "after")
    assert last["started"] >= max(step(done, "left")["finished"], step(done, "right")["finished"])


def test_many_parallel_steps_all_run_and_all_log(srv: OptionServer) -> None:
    # Every step of a group writes the same task (and its log) at once.
    steps = [sh(f"p{i}", f'echo "line from p{i}"; echo "more from p{i}"',
                start="after_previous" if i == 0 else "with_previous") for i in range(40)]
    with srv.client() as c:
        p = project(c, rid("wide"), steps)
        done = wait_task(c, run(c, p["id"])["id"], timeout=60)
        text = log(c, done["id"])
    assert done["state"] == "success", [s["reason"] for s in done["steps"] if s["state"] != "success"]
    for i in range(40):
        assert lines_of(text, f"p{i}") == [f"line from p{i}", f"more from p{i}"]


def test_a_failure_skips_success_steps_and_runs_failure_and_always_steps(srv: OptionServer) -> None:
    steps = [
        sh("ok", "echo fine"),
        sh("boom", "echo breaking; exit 3"),
        sh("deploy", "echo must-not-run"),
        sh("rollback", "echo rolling-back", condition="failure"),
        sh("notify", "echo always-here", condition="always"),
    ]
    with srv.client() as c:
        p = project(c, rid("failing"), steps)
        done = wait_task(c, run(c, p["id"])["id"])
        text = log(c, done["id"])
    states = {s["name"]: s["state"] for s in done["steps"]}
    assert done["state"] == "failed"
    assert states == {"ok": "success", "boom": "failed", "deploy": "skipped",
                      "rollback": "success", "notify": "success"}
    assert step(done, "boom")["exit_code"] == 3 and step(done, "boom")["reason"] == "exit code 3"
    skipped = step(done, "deploy")
    assert skipped["worker_name"] is None and skipped["started"] is None and skipped["reason"]
    assert "must-not-run" not in text and "deploy | Running on" not in text
    assert lines_of(text, "rollback") == ["rolling-back"] and lines_of(text, "notify") == ["always-here"]


def test_a_parallel_failure_fails_the_task_but_lets_its_sibling_finish(srv: OptionServer) -> None:
    steps = [
        sh("slow", "sleep 1; echo slow-done"),
        sh("quick-fail", "exit 9", start="with_previous"),
        sh("next", "echo must-not-run"),
    ]
    with srv.client() as c:
        p = project(c, rid("siblings"), steps)
        done = wait_task(c, run(c, p["id"])["id"])
        text = log(c, done["id"])
    assert done["state"] == "failed"
    assert [s["state"] for s in done["steps"]] == ["success", "failed", "skipped"]
    assert lines_of(text, "slow") == ["slow-done"] and "must-not-run" not in text


def test_a_step_timeout_times_the_task_out_and_skips_what_follows(srv: OptionServer) -> None:
    steps = [
        sh("hang", "echo hanging; sleep 60", timeout_s=1),
        sh("deploy", "echo must-not-run"),
        sh("cleanup", "echo cleaned", condition="always"),
    ]
    with srv.client() as c:
        p = project(c, rid("slow"), steps)
        done = wait_task(c, run(c, p["id"])["id"], timeout=20)
        text = log(c, done["id"])
    assert done["state"] == "timed_out", [(s["name"], s["state"]) for s in done["steps"]]
    assert [s["state"] for s in done["steps"]] == ["timed_out", "skipped", "success"]
    assert "timed out" in step(done, "hang")["reason"]
    assert "must-not-run" not in text and lines_of(text, "cleanup") == ["cleaned"]


def test_a_failed_step_wins_over_a_timeout(srv: OptionServer) -> None:
    steps = [
        sh("hang", "sleep 60", timeout_s=1),
        sh("broken", "exit 2", start="with_previous"),
    ]
    with srv.client() as c:
        p = project(c, rid("both"), steps)
        done = wait_task(c, run(c, p["id"])["id"], timeout=20)
    assert [s["state"] for s in done["steps"]] == ["timed_out", "failed"]
    assert done["state"] == "failed"


def test_updating_the_process_does_not_change_a_queued_run(srv: OptionServer) -> None:
    with srv.client() as c:
        p = project(c, rid("versioned"), [sh("one", "sleep 1; echo version-1")])
        t = run(c, p["id"])
        r = c.put(f"/api/projects/{p['id']}/process", json={"steps": [sh("two", "echo version-2")]})
        assert r.status_code == 200, r.text
        done = wait_task(c, t["id"])
        text = log(c, t["id"])
    assert [s["name"] for s in done["steps"]] == ["one"]
    assert lines_of(text, "one") == ["version-1"] and "version-2" not in text


def test_cancelling_a_run_skips_the_steps_it_did_not_reach(srv: OptionServer) -> None:
    steps = [
        sh("long", "echo long-started; sleep 300"),
        sh("next", "echo must-not-run"),
        sh("finally", "echo must-not-run-either", condition="always"),
    ]
    with srv.client() as c:
        p = project(c, rid("cancelled"), steps)
        t = run(c, p["id"])
        wait_until(lambda: "long-started" in log(c, t["id"]), 15, what="the first step to start")
        assert c.post(f"/api/tasks/{t['id']}/cancel").status_code == 200
        done = wait_task(c, t["id"], timeout=10)
        text = log(c, t["id"])
    assert done["state"] == "cancelled"
    assert [s["state"] for s in done["steps"]] == ["cancelled", "skipped", "skipped"]
    assert "must-not-run" not in text
