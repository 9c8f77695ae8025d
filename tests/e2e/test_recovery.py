"""Crash recovery: kill -9 the server while a built-in step runs and other tasks wait in
the queue, start it again on the same data, and check what it finds and does."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tasks_support import (
    OptionServer,
    kill_matching,
    lines_of,
    log,
    parse_time,
    pgrep,
    project,
    script,
    served,
    step,
    task,
    wait_task,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgres"])
def crashable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OptionServer]:
    """A server of this test's own, one task at a time (so the rest stay queued)."""
    with served(request, tmp_path / "data", request.param, extra=["--task-cap", "1"]) as s:
        yield s


def test_kill_9_during_a_step_then_restart(crashable: OptionServer) -> None:
    marker = f"shoalcrash{secrets.token_hex(6)}"
    try:
        with crashable.client() as c:
            running = script(c, f'echo "dir=$SHOAL_WORK_DIR"; echo started-{marker}; '
                                f"bash -c 'exec -a {marker} sleep 300' & wait")
            queued = [script(c, f"echo queued-{i}") for i in range(2)]
            wait_until(lambda: f"started-{marker}" in log(c, running["id"]), 15,
                       what="the step to print its marker")
            wait_until(lambda: pgrep(marker), 10, what="the step's sleep to start")
            assert [task(c, t["id"])["state"] for t in queued] == ["queued", "queued"]
            workdir = lines_of(log(c, running["id"]), "Run script")[0].removeprefix("dir=")

        crashable.crash()
        crashable.start()

        with crashable.client() as c:
            crashed = wait_task(c, running["id"], timeout=20)
            after = [wait_task(c, t["id"], timeout=20) for t in queued]
            text = log(c, running["id"])
            queued_out = [lines_of(log(c, t["id"]), "Run script") for t in queued]
            executing = c.get("/api/tasks", params={"state": "executing"}).json()["total"]
        wait_until(lambda: not pgrep(marker), 5, what="the orphaned step process to be gone")
    finally:
        kill_matching(marker)

    s = step(crashed, "Run script")
    assert crashed["state"] == "failed" and s["state"] == "failed"
    assert s["reason"] == "server stopped during step"
    assert f"started-{marker}" in lines_of(text, "Run script"), "the log up to the crash survives"
    assert "server stopped during step" in text
    assert [t["state"] for t in after] == ["success", "success"]
    assert parse_time(after[0]["started"]) <= parse_time(after[1]["started"]), "still in queue order"
    assert queued_out == [["queued-0"], ["queued-1"]]
    assert executing == 0, "no task stays executing after recovery"
    assert workdir and not Path(workdir).exists(), "the crashed step's working folder is cleaned up"


@pytest.mark.parametrize("signals", [1, 2], ids=["SIGTERM", "a second SIGTERM forces it"])
def test_a_stop_during_a_step_ends_it(
    tmp_path: Path, request: pytest.FixtureRequest, signals: int
) -> None:
    """SIGTERM (a clean stop) while a step runs: after the restart the task is not left
    executing, and the step's process is gone. A second SIGTERM (or Ctrl-C) while it
    stops forces the stop: it no longer waits for clients, but still ends the step, its
    process and the server's children, and exits 0 with no traceback."""
    marker = f"shoalstop{secrets.token_hex(6)}"
    with served(request, tmp_path / "data") as srv:
        try:
            with srv.client() as c:
                t = script(c, f"echo up; bash -c 'exec -a {marker} sleep 300' & wait")
                wait_until(lambda: pgrep(marker), 10, what="the step's sleep to start")
            assert srv.proc is not None
            for sent in range(signals):
                time.sleep(0.05 if sent else 0)
                srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(20)
            code = srv.stop()  # already ended: collects its exit code and output
            output = "".join(srv.lines)
            wait_until(lambda: not pgrep(marker), 5, what="the step's process to end with the server")
            wait_until(lambda: not pgrep(f"[-]-data-dir {srv.data_dir}"), 5,
                       what="the server's children (projector, built-in worker) to end")
            srv.start()
            with srv.client() as c:
                done = wait_task(c, t["id"], timeout=20)
                executing = c.get("/api/tasks", params={"state": "executing"}).json()["total"]
        finally:
            kill_matching(marker)
    assert code == 0, output[-2000:]
    assert "Traceback" not in output, output[-4000:]
    assert done["state"] == "failed" and done["steps"][0]["reason"] == "server stopped during step"
    assert executing == 0


def test_kill_9_during_an_execution_on_behalf_of_a_target(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two targets, one execution at a time: the one running at the crash fails with the
    reason, the other still runs after the restart, and the step and task end."""
    marker = f"shoalbehalf{secrets.token_hex(6)}"
    with served(request, tmp_path / "data") as srv:
        try:
            with srv.client() as c:
                env = c.post("/api/environments", json={"name": "Live"}).json()
                for name in ("a-first", "b-second"):
                    assert c.post("/api/targets", json={
                        "name": name, "kind": "cloud_region", "roles": ["web"],
                        "environment_ids": [env["id"]],
                    }).status_code == 201
                body = (f'if [ "$SHOAL_TARGET_NAME" = a-first ]; then echo started-{marker}; '
                        f"bash -c 'exec -a {marker} sleep 300' & wait; fi; echo ran")
                p = project(c, "regional", [{
                    "name": "deploy", "action": "script", "syntax": "bash", "script_body": body,
                    "on_behalf_of_roles": ["web"], "max_parallelism": 1,
                }])
                run = c.post(f"/api/projects/{p['id']}/runs", json={"environment": "Live"}).json()
                wait_until(lambda: pgrep(marker), 15, what="the first execution's sleep to start")

            srv.crash()
            srv.start()

            with srv.client() as c:
                done = wait_task(c, run["id"], timeout=30)
                text = log(c, run["id"])
            wait_until(lambda: not pgrep(marker), 5, what="the orphaned process to be gone")
        finally:
            kill_matching(marker)
    deploy = step(done, "deploy")
    assert done["state"] == "failed" and deploy["reason"] == "1 of 2 targets failed: a-first"
    first, second = deploy["executions"]
    assert (first["state"], first["reason"]) == ("failed", "server stopped during step")
    assert second["state"] == "success"
    assert lines_of(text, "deploy [b-second]") == ["ran"]
