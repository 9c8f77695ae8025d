"""`shoal run-script` against the real server: the task id, --wait's log and exit code,
and one clear line with exit 3 when the server is wrong or away."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.server import SHOAL
from tests.e2e.tasks_support import (
    BUILT_IN,
    OptionServer,
    free_port,
    lines_of,
    log,
    pgrep,
    task_total,
    wait_task,
)
from tests.helpers import rid

pytestmark = pytest.mark.e2e

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def shoal(
    srv: OptionServer, *args: str, key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = [SHOAL, "run-script", "--server", url or srv.url, "--api-key", key or srv.admin_key]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60, check=False)


def test_run_script_prints_the_task_id_and_queues_it(srv: OptionServer) -> None:
    r = shoal(srv, "--script", "echo from-cli")
    assert r.returncode == 0, r.stderr
    tid = r.stdout.strip()
    assert UUID.match(tid), r.stdout
    with srv.client() as c:
        done = wait_task(c, tid)
        assert done["state"] == "success" and done["steps"][0]["worker_name"] == BUILT_IN
        assert lines_of(log(c, tid), "Run script") == ["from-cli"]


def test_wait_streams_the_log_and_exits_with_the_outcome(srv: OptionServer, tmp_path: Path) -> None:
    ok = shoal(srv, "--syntax", "python", "--script", "print('py-' + 'ok')", "--wait")
    assert ok.returncode == 0, ok.stderr
    assert UUID.match(ok.stdout.splitlines()[0])
    assert "[stdout] Run script | py-ok" in ok.stdout and "Task success" in ok.stdout

    bad = shoal(srv, "--script", "echo going-down; exit 4", "--wait")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "going-down" in bad.stdout and "exit code 4" in bad.stdout
    assert "Traceback" not in bad.stderr

    path = tmp_path / "deploy.sh"
    path.write_text('echo "file:$SHOAL_WORKER_POOL"\n')
    pool = ("--worker-pool", "Default Worker Pool")
    named = shoal(srv, "--file", str(path), *pool, "--syntax", "sh", "--wait")
    assert named.returncode == 0, named.stderr
    assert "[stdout] Run script | file:Default Worker Pool" in named.stdout


def test_wait_rides_out_read_models_that_are_behind(srv: OptionServer) -> None:
    """With the read models held up for longer than the server's read wait (5 s), the
    log's first read is answered 503 "try again shortly": `--wait` tries again, says so
    once, and streams the log once they catch up, instead of giving up with exit 3."""
    (projector,) = (int(line.split()[0]) for line in pgrep(f"adapters.projector --data-dir {srv.data_dir} "))
    cmd = [SHOAL, "run-script", "--server", srv.url, "--api-key", srv.admin_key,
           "--script", "echo patient", "--wait"]
    os.kill(projector, signal.SIGSTOP)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(7.5)  # the server's read wait and one pause after its 503
        still_waiting = proc.poll() is None
    finally:
        os.kill(projector, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert still_waiting, (proc.returncode, out, err)
    assert proc.returncode == 0, (out, err)
    assert "[stdout] Run script | patient" in out and "Task success" in out
    assert len(err.strip().splitlines()) == 1 and "read models are behind" in err, err
    assert err.startswith("shoal run-script: ") and "Traceback" not in err


def test_wait_follows_the_task_through_a_server_restart(tmp_path: Path) -> None:
    """The server restarts while `--wait` streams a queued task's log: the CLI says once
    that it reconnects, resumes after the last line it printed (nothing twice), and exits
    with the task's outcome once it ran on the restarted server, not 3 for the lost
    connection."""
    port = free_port()
    srv = OptionServer(tmp_path / "data", extra=["--port", str(port), "--task-cap", "1"])
    srv.start()
    try:
        with srv.client() as c:
            blocker = c.post("/api/tasks/script", json={"syntax": "bash", "script_body": "sleep 30"})
            assert blocker.status_code == 201, blocker.text
        cli = subprocess.Popen(
            [SHOAL, "run-script", "--server", srv.url, "--api-key", srv.admin_key,
             "--script", "echo after-restart", "--wait"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(2.0)  # queued behind the blocker, its log followed
        assert cli.poll() is None, cli.communicate()
        srv.stop()
        srv.start()
        assert srv.url.endswith(f":{port}")
        out, err = cli.communicate(timeout=60)
    finally:
        srv.stop()
    assert cli.returncode == 0, (out, err)
    assert out.count("after-restart") == 1 and "Task success" in out, out
    assert out.count("Task queued by") == 1, "lines printed before the restart are not repeated"
    assert len(err.strip().splitlines()) == 1 and "reconnecting" in err, err
    assert err.startswith("shoal run-script: ") and "Traceback" not in err


def test_wrong_key_and_unreachable_server_are_exit_3_with_one_line(srv: OptionServer) -> None:
    with srv.client() as c:
        before = task_total(c)
    wrong = shoal(srv, "--script", "echo nope", "--wait", key="shoal_" + rid("bogus"))
    away = shoal(srv, "--script", "echo nope", "--wait", url=f"http://127.0.0.1:{free_port()}")
    for r in (wrong, away):
        assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and not r.stdout.strip()
    assert srv.admin_key not in wrong.stderr
    with srv.client() as c:
        assert task_total(c) == before


def test_bad_usage_is_exit_2(srv: OptionServer, tmp_path: Path) -> None:
    with srv.client() as c:
        before = task_total(c)
    binary = tmp_path / "binary.sh"
    binary.write_bytes(b"\xff\xfe\0echo")
    cases = [
        shoal(srv, "--script", "echo x", "--worker-pool", rid("no-such-pool")),
        shoal(srv, "--file", str(tmp_path / "missing.sh")),
        shoal(srv, "--script", "echo x", "--syntax", "cobol"),
        shoal(srv, "--file", str(binary)),
        shoal(srv, "--script", "echo x", url=srv.url.replace("http://", "ftp://")),
        shoal(srv, "--script", "echo x", url="http://[::1"),
        shoal(srv, "--script", "echo x", key="clé"),
        # Bytes that are not UTF-8, as a shell passes them: no text can carry them.
        subprocess.run([SHOAL, "run-script", "--server", srv.url, "--api-key", srv.admin_key,
                        "--script", b"echo \xff"], capture_output=True, text=True, timeout=60),
    ]
    for r in cases:
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "does not exist" in cases[0].stderr
    assert "not UTF-8 text" in cases[3].stderr
    assert "http:// or https://" in cases[4].stderr and "not a URL" in cases[5].stderr
    assert "not an API key" in cases[6].stderr and "not valid UTF-8" in cases[7].stderr
    with srv.client() as c:
        assert task_total(c) == before
