"""The built-in worker process of a real `shoal server`: it is a child of the server, it
outlives neither the server nor its own death unnoticed, and nothing is left behind."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import SHOAL
from tests.e2e.tasks_support import (
    OptionServer,
    kill_matching,
    lines_of,
    log,
    pgrep,
    script,
    served,
    step,
    wait_task,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


def worker_pids(data_dir: Path) -> list[int]:
    """The built-in worker processes serving the server on ``data_dir``."""
    return [int(line.split()[0]) for line in pgrep(f"agent.builtin --packages {data_dir}/packages")]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_killing_the_worker_process_fails_its_steps_and_a_new_one_takes_over(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    marker = f"shoalbiw{secrets.token_hex(6)}"
    data = tmp_path / "data"
    with served(request, data) as srv:
        try:
            (first,) = worker_pids(data)
            assert srv.proc is not None and parent_of(first) == srv.proc.pid
            with srv.client() as c:
                body = f'echo "dir=$SHOAL_WORK_DIR"; bash -c "exec -a {marker} sleep 300" & wait'
                doomed = [script(c, body) for _ in range(2)]
                wait_until(lambda: len(pgrep(marker)) == 2, 15, what="both steps to run")
                folders = [wait_until(lambda t=t: lines_of(log(c, t["id"]), "Run script"), 10,
                                      what="the step's first line")[0].removeprefix("dir=") for t in doomed]
                os.kill(first, signal.SIGKILL)
                ended = [wait_task(c, t["id"], timeout=20) for t in doomed]
                text = log(c, doomed[0]["id"])
                wait_until(lambda: len(worker_pids(data)) == 1, 15, what="a new worker process")
                after = wait_task(c, script(c, "echo after")["id"])
                after_text = log(c, after["id"])
        finally:
            kill_matching(marker)
    reason = f"the built-in worker process (pid {first}) ended unexpectedly: killed by signal SIGKILL"
    for t in ended:
        assert t["state"] == "failed" and step(t, "Run script")["reason"] == reason
    assert reason in text, "the step's log says what happened"
    assert not pgrep(marker), "their orphaned processes were killed"
    assert all(f and not Path(f).exists() for f in folders), "their folders were removed"
    assert after["state"] == "success" and lines_of(after_text, "Run script") == ["after"]


def test_a_killed_server_takes_its_worker_process_and_steps_with_it(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """kill -9 of the server: the worker process sees the end of its pipe, kills the step's
    processes, removes its folder and exits, with no restart needed."""
    marker = f"shoalorphan{secrets.token_hex(6)}"
    data = tmp_path / "data"
    srv = OptionServer(data)
    srv.start()
    try:
        (worker,) = worker_pids(data)
        with srv.client() as c:
            t = script(c, f'echo "dir=$SHOAL_WORK_DIR"; bash -c "exec -a {marker} sleep 300" & wait')
            wait_until(lambda: pgrep(marker), 15, what="the step to run")
            folder = wait_until(lambda: lines_of(log(c, t["id"]), "Run script"), 10,
                                what="the step's first line")[0].removeprefix("dir=")
        srv.crash()
        wait_until(lambda: not pgrep(marker), 10, what="the step's processes to be gone")
        wait_until(lambda: not worker_pids(data), 10, what="the worker process to exit")
        assert not Path(folder).exists()
        assert worker not in [int(p.split()[0]) for p in pgrep("agent.builtin")]
        # Started again (which also ends the nats-server the crash left), with a new worker.
        srv.start()
        assert len(worker_pids(data)) == 1
    finally:
        kill_matching(marker)
        srv.stop()


def test_a_clean_stop_ends_the_worker_process(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    with served(request, data) as srv:
        assert len(worker_pids(data)) == 1
        assert srv.stop() == 0
    assert not worker_pids(data)
    assert '"msg":"built-in worker stopped"' in "".join(srv.lines)


def test_a_server_that_cannot_start_its_nats_leaves_nothing_running(tmp_path: Path) -> None:
    """Startup fails half-way (the embedded nats-server cannot have its folder) while the
    built-in worker process is starting beside it: the server exits with an error, and
    neither that process, nor the projector process, nor anything else it started
    outlives it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "nats").write_text("not a folder")
    proc = subprocess.run(
        [SHOAL, "server", "--data-dir", str(data), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    # The cause, in one line the operator can act on; no traceback.
    said = proc.stdout + proc.stderr
    assert f'"msg":"cannot start: File exists: {data / "nats"}"' in said, said
    assert "Traceback" not in said
    assert not worker_pids(data)
    assert not pgrep(f"nats-server -c {data}")
    assert not pgrep(f"adapters.projector --data-dir {data} ")
