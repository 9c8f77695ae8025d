"""Ad-hoc scripts on the server's built-in worker, through the real `shoal server`: what a
script sees, how it ends (exit code, timeout, cancel), and the task list."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from tests.e2e.tasks_support import (
    BUILT_IN,
    CANARY,
    OptionServer,
    events,
    kill_matching,
    lines_of,
    log,
    parse_time,
    pgrep,
    script,
    wait_step,
    wait_task,
)
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e


def test_script_runs_on_the_built_in_worker_in_a_private_folder(srv: OptionServer) -> None:
    body = (
        'echo "task=$SHOAL_TASK_ID"; echo "step=$SHOAL_STEP_NAME"; echo "worker=$SHOAL_WORKER_NAME"\n'
        'echo "pool=$SHOAL_WORKER_POOL"; echo "dir=$SHOAL_WORK_DIR"; echo "cwd=$(pwd)"\n'
        'echo "mode=$(stat -c %a .)"; echo "owner=$(stat -c %u .)"; echo oops >&2\n'
        'echo "canary=${' + CANARY + ':-absent}"; env | cut -d= -f1 | sort | tr "\\n" " "; echo\n'
    )
    with srv.client() as c:
        t = script(c, body)
        assert t["state"] == "queued" and t["kind"] == "script"
        assert [s["name"] for s in t["steps"]] == ["Run script"]
        done = wait_task(c, t["id"])
        text = log(c, t["id"])
        assigned = [e for e in events(c, "Task.StepAssigned") if e["aggregate_id"] == t["id"]]

    assert done["state"] == "success", text
    (s,) = done["steps"]
    assert (s["state"], s["worker_id"], s["worker_name"], s["exit_code"]) == ("success", None, BUILT_IN, 0)
    assert s["started"] and s["finished"] and done["started"] and done["finished"]
    assert done["node"]
    out = dict(line.split("=", 1) for line in lines_of(text, "Run script") if "=" in line)
    assert out["task"] == t["id"] and out["step"] == "Run script" and out["worker"] == BUILT_IN
    assert out["pool"] == "Default Worker Pool"
    assert out["cwd"] == out["dir"] and out["mode"] == "700" and out["owner"] == str(os.geteuid())
    assert out["canary"] == "absent", "the script must get a minimal environment, not the server's"
    assert lines_of(text, "Run script", "stderr") == ["oops"]
    assert f"[system] Run script | Running on {BUILT_IN}" in text
    # The step's working folder is gone once the step has ended.
    assert not Path(out["dir"]).exists()
    assert [e["data"]["worker_name"] for e in assigned] == [BUILT_IN]
    assert assigned[0]["data"]["worker_id"] is None


def test_each_step_gets_a_fresh_folder_nobody_else_can_read(srv: OptionServer) -> None:
    body = 'echo "$SHOAL_WORK_DIR"; stat -c %a .; test -e mine && echo leftover || echo clean; touch mine'
    with srv.client() as c:
        first, second = (wait_task(c, script(c, body)["id"]) for _ in range(2))
        logs = [lines_of(log(c, t["id"]), "Run script") for t in (first, second)]
    assert first["state"] == second["state"] == "success"
    (dir1, mode1, clean1), (dir2, mode2, clean2) = logs
    assert dir1 != dir2, "two steps must not share a working folder"
    assert mode1 == mode2 == "700"
    assert clean1 == clean2 == "clean", "nothing is left from an earlier step"
    assert not Path(dir1).exists() and not Path(dir2).exists()
    parent = Path(dir1).parent
    if parent.exists():  # the folders live under a parent that others cannot list or write
        assert not stat.S_IMODE(parent.stat().st_mode) & 0o006


def test_sh_and_python_syntaxes(srv: OptionServer) -> None:
    with srv.client() as c:
        t_sh = script(c, 'printf "%s\\n" "sh:$SHOAL_STEP_NAME"', syntax="sh")
        t_py = script(
            c, "import os, sys\nprint('py', os.environ['SHOAL_WORKER_NAME'])\nprint('e', file=sys.stderr)",
            syntax="python",
        )
        for t in (t_sh, t_py):
            assert wait_task(c, t["id"])["state"] == "success", log(c, t["id"])
        assert lines_of(log(c, t_sh["id"]), "Run script") == ["sh:Run script"]
        py_log = log(c, t_py["id"])
    assert lines_of(py_log, "Run script") == [f"py {BUILT_IN}"]
    assert lines_of(py_log, "Run script", "stderr") == ["e"]


def test_exit_code_fails_the_step_and_the_task(srv: OptionServer) -> None:
    with srv.client() as c:
        t = wait_task(c, script(c, "echo before; echo on-stderr >&2; exit 7")["id"])
        text = log(c, t["id"])
    (s,) = t["steps"]
    assert t["state"] == "failed"
    assert (s["state"], s["exit_code"], s["reason"]) == ("failed", 7, "exit code 7")
    assert lines_of(text, "Run script") == ["before"]
    assert lines_of(text, "Run script", "stderr") == ["on-stderr"]
    assert "Step failed: exit code 7" in text and text.rstrip().endswith("Task failed")
    for line in text.splitlines():  # `<ISO time> [stdout|stderr|system] [<step> | ]<text>`
        stamp, stream, _ = line.split(" ", 2)
        assert parse_time(stamp).tzinfo is not None, line
        assert stream in ("[stdout]", "[stderr]", "[system]"), line


def test_timeout_kills_the_step_and_times_the_task_out(srv: OptionServer) -> None:
    marker = f"to{time.time_ns()}"
    with srv.client() as c:
        t = script(c, f"echo begun; bash -c 'exec -a {marker} sleep 300' & wait", timeout_s=1)
        try:
            done = wait_task(c, t["id"], timeout=15)
            text = log(c, t["id"])
        finally:
            deadline = time.monotonic() + 5
            while pgrep(marker) and time.monotonic() < deadline:
                time.sleep(0.1)
            remaining = pgrep(marker)
            kill_matching(marker)
    (s,) = done["steps"]
    assert done["state"] == "timed_out" and s["state"] == "timed_out"
    assert "timed out" in s["reason"] and "1" in s["reason"]
    assert lines_of(text, "Run script") == ["begun"]
    assert not remaining


def test_cancel_stops_a_running_step_and_its_processes(srv: OptionServer) -> None:
    marker = f"cx{time.time_ns()}"
    with srv.client() as c:
        t = script(c, f"echo started-{marker}; bash -c 'exec -a {marker} sleep 300' & wait")
        try:
            wait_step(c, t["id"], "Run script", ("running",))
            wait_until(lambda: pgrep(marker), 10, what="the step's sleep to start")
            asked = time.monotonic()
            r = c.post(f"/api/tasks/{t['id']}/cancel")
            assert r.status_code == 200, r.text
            done = wait_task(c, t["id"], timeout=10)
            took = time.monotonic() - asked
            wait_until(lambda: not pgrep(marker), 5, what="the cancelled step's process to be gone")
        finally:
            kill_matching(marker)
        again = c.post(f"/api/tasks/{t['id']}/cancel")
        text = log(c, t["id"])
        cancelled = [e for e in events(c, "Task.CancelRequested") if e["aggregate_id"] == t["id"]]
    assert done["state"] == "cancelled" and done["steps"][0]["state"] == "cancelled"
    assert took < 5, f"cancel took {took:.1f}s"
    assert again.status_code == 409 and "ended" in again.json()["detail"]
    assert f"started-{marker}" in text and "Cancellation requested by" in text
    assert [e["actor"]["kind"] for e in cancelled] == ["api_key"], "the audit log names who cancelled"


def test_task_list_filters_by_state_and_pages(srv: OptionServer) -> None:
    with srv.client() as c:
        ok = wait_task(c, script(c, "true")["id"])
        bad = wait_task(c, script(c, "false")["id"])
        failed = c.get("/api/tasks", params={"state": "failed", "take": 1000}).json()
        success = c.get("/api/tasks", params={"state": "success", "take": 1000}).json()
        everything = c.get("/api/tasks", params={"take": 1000}).json()
        page = c.get("/api/tasks", params={"skip": 1, "take": 1}).json()
        assert c.get("/api/tasks", params={"state": "bogus"}).status_code == 422
        assert c.get(f"/api/tasks/{rid('nope')}").status_code == 404
    ids = [t["id"] for t in everything["items"]]
    assert ids.index(bad["id"]) < ids.index(ok["id"]), "newest first"
    assert bad["id"] in [t["id"] for t in failed["items"]]
    assert ok["id"] not in [t["id"] for t in failed["items"]]
    assert all(t["state"] == "failed" for t in failed["items"])
    assert ok["id"] in [t["id"] for t in success["items"]]
    assert everything["total"] == len(everything["items"]) >= failed["total"] + success["total"]
    assert page["total"] == everything["total"] and [t["id"] for t in page["items"]] == ids[1:2]

