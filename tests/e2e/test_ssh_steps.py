"""Steps on SSH workers, end to end: the real server drives a real OpenSSH sshd on
loopback (tests/ssh_support.py), with the worker registered through the API."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.tasks_support import lines_of, log, script, step, wait_step, wait_task
from tests.helpers import rid, wait_until
from tests.ssh_support import Sshd, require_sshd, running_sshd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Sshd]:
    require_sshd()
    with running_sshd(tmp_path / "sshd") as sshd:
        yield sshd


def ssh_worker(c: httpx.Client, host: Sshd, **ssh: Any) -> tuple[str, dict[str, Any]]:
    pool = rid("ssh-pool")
    assert c.post("/api/worker-pools", json={"name": pool}).status_code == 201
    r = c.post("/api/workers", json={
        "name": rid("ssh"), "pool_ids": [pool], "comms_style": "ssh", "capacity": 4,
        "ssh": {"host": host.host, "port": host.port, "username": host.user,
                "host_key_fingerprint": host.fingerprint, "private_key": host.private_key, **ssh},
    })
    assert r.status_code == 201, r.text
    return pool, r.json()


def test_a_script_runs_over_ssh_with_its_output_and_exit_code(server: ServerProcess, host: Sshd) -> None:
    with server.client() as c:
        pool, worker = ssh_worker(c, host)
        ok = wait_task(c, script(c, 'echo "on $SHOAL_WORKER_NAME in $SHOAL_WORKER_POOL"; '
                                    'echo warn >&2; pwd', worker_pool_id=pool)["id"], timeout=30)
        bad = wait_task(c, script(c, "exit 5", worker_pool_id=pool)["id"], timeout=30)
        wrong = wait_task(c, script(c, "print(1)", syntax="python", worker_pool_id=pool)["id"],
                          timeout=30)
        text = log(c, ok["id"])
    out = lines_of(text, "Run script")
    assert ok["state"] == "success" and ok["steps"][0]["worker_name"] == worker["name"], ok
    assert out[0] == f"on {worker['name']} in {pool}" and "warn" in text
    assert not Path(out[1]).exists(), "the remote folder is removed afterwards"
    assert (bad["state"], bad["steps"][0]["exit_code"]) == ("failed", 5)
    assert wrong["state"] == "failed" and "bash" in wrong["steps"][0]["reason"]


def test_a_host_key_that_does_not_match_runs_nothing_and_makes_the_worker_unhealthy(
    server: ServerProcess, host: Sshd
) -> None:
    other = "SHA256:" + "A" * 43
    with server.client() as c:
        pool, worker = ssh_worker(c, host, host_key_fingerprint=other)
        tid = script(c, "echo must-not-run", worker_pool_id=pool)["id"]
        waiting = wait_step(c, tid, "Run script", ("waiting",), timeout=20)
        health = wait_until(lambda: (w := c.get(f"/api/workers/{worker['id']}").json())
                            ["health_status"] == "unhealthy" and w, 10)
        assert c.post(f"/api/tasks/{tid}/cancel").status_code == 200
        text = log(c, tid)
    assert other in health["health_detail"] and host.fingerprint in health["health_detail"]
    assert "must-not-run" not in lines_of(text, "Run script")
    assert step(waiting, "Run script")["worker_name"] is None


def test_cancel_leaves_no_remote_process(server: ServerProcess, host: Sshd) -> None:
    sleeper = f"sleep 300.{random.randrange(10**8):08d}"
    with server.client() as c:
        pool, _ = ssh_worker(c, host)
        tid = script(c, f"echo go; {sleeper}", worker_pool_id=pool)["id"]
        wait_step(c, tid, "Run script", ("running",), timeout=20)
        wait_until(lambda: subprocess.run(["pgrep", "-f", sleeper]).returncode == 0, 10)
        assert c.post(f"/api/tasks/{tid}/cancel").status_code == 200
        t = wait_task(c, tid, timeout=20)
    assert t["state"] == "cancelled", t
    wait_until(lambda: subprocess.run(["pgrep", "-f", sleeper]).returncode == 1, 10,
               what="the remote sleep to be gone")


def test_the_health_check_runs_over_ssh(server: ServerProcess, host: Sshd) -> None:
    with server.client() as c:
        _, worker = ssh_worker(c, host)
        r = c.post(f"/api/workers/{worker['id']}/health-check")
        assert r.status_code == 200, r.text
        host.stop()
        gone = c.post(f"/api/workers/{worker['id']}/health-check")
        host.start()
    assert r.json()["status"] == "healthy", r.json()
    assert gone.json()["status"] == "unavailable", gone.json()


def test_a_host_that_goes_away_mid_step_fails_the_step_within_15s(
    server: ServerProcess, host: Sshd
) -> None:
    sleeper = f"sleep 120.{random.randrange(10**8):08d}"
    with server.client() as c:
        pool, _ = ssh_worker(c, host)
        tid = script(c, f"echo go; {sleeper}", worker_pool_id=pool)["id"]
        wait_step(c, tid, "Run script", ("running",), timeout=20)
        host.stop()  # the listener and this connection's sshd: a crashed host
        gone = time.monotonic()
        t = wait_task(c, tid, timeout=30)
        took = time.monotonic() - gone
    subprocess.run(["pkill", "-f", sleeper], check=False)
    assert t["state"] == "failed", t
    assert "ssh" in t["steps"][0]["reason"].lower(), t["steps"][0]
    assert took <= 15.0, f"noticed after {took:.1f}s"
    print(f"\nSSH host loss noticed after {took:.1f}s: {t['steps'][0]['reason']}")
