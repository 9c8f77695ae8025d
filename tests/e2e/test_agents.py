"""External workers end to end: the real server, and `shoal agent` processes registered
and run through the CLI, over the server's embedded nats-server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.signing import load_private_key, new_private_key_pem, public_key_text
from tests.e2e.agents import AgentProcess
from tests.e2e.server import SHOAL, ServerProcess
from tests.e2e.tasks_support import lines_of, log, script, step, task, wait_step, wait_task
from tests.helpers import rid

pytestmark = pytest.mark.e2e

BUILT_IN = "built-in worker"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "server").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def agents(server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    """Make agents in a pool of their own; all are stopped at the end."""
    made: list[AgentProcess] = []

    def make(pool: str, style: str = "polling", *extra: str, name: str | None = None) -> AgentProcess:
        name = name or rid(f"{style}-agent")
        agent = AgentProcess(server, tmp_path / name, name, [pool], style, *extra)
        agent.register()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


def unique_sleep(seconds: int) -> str:
    """A sleep command line no other process has, for pgrep to find."""
    return f"sleep {seconds}.{random.randrange(10**8):08d}"


def new_pool(c: httpx.Client) -> str:
    name = rid("agents")
    assert c.post("/api/worker-pools", json={"name": name}).status_code == 201
    return name


def test_steps_run_on_the_pool_agents_and_spread_over_them(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        started = [agents(pool, "listening").start(), agents(pool, "listening").start(),
                   agents(pool, "polling").start()]
        ids = [script(c, 'sleep 0.3; echo "on $SHOAL_WORKER_NAME in $SHOAL_WORKER_POOL"; '
                         'echo oops >&2; exit 0', worker_pool_id=pool)["id"] for _ in range(6)]
        done = [wait_task(c, tid, timeout=30) for tid in ids]
        texts = [log(c, tid) for tid in ids]
    names = {a.name for a in started}
    used = {d["steps"][0]["worker_name"] for d in done}
    assert all(d["state"] == "success" for d in done), done
    assert used <= names and len(used) >= 2, used
    for d, text in zip(done, texts, strict=True):
        assert f"on {d['steps'][0]['worker_name']} in {pool}" in text
        assert "oops" in text and d["steps"][0]["exit_code"] == 0
        assert d["steps"][0]["worker_id"] is not None


def test_exit_codes_and_failures_come_back_from_the_agent(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agents(pool, "listening").start()
        t = wait_task(c, script(c, "echo before; exit 7", worker_pool_id=pool)["id"], timeout=30)
    s = t["steps"][0]
    assert (t["state"], s["state"], s["exit_code"]) == ("failed", "failed", 7)


def test_a_polling_agent_that_was_away_picks_up_the_work_queued_meanwhile(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "polling").start()
        assert agent.stop() == 0
        agent.wait_online(online=False, timeout=15)
        tid = script(c, "echo picked up", worker_pool_id=pool)["id"]
        waiting = wait_step(c, tid, "Run script", ("waiting",))
        assert pool in step(waiting, "Run script")["reason"]
        agent.start()
        t = wait_task(c, tid, timeout=30)
        assert t["state"] == "success" and "picked up" in log(c, tid)


def test_an_agent_killed_mid_step_fails_the_step_as_lost_within_10s(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "listening").start()
        marker = unique_sleep(120)
        tid = script(c, f"echo begun; {marker}", worker_pool_id=pool)["id"]
        wait_step(c, tid, "Run script", ("running",))
        deadline = time.monotonic() + 20
        while "begun" not in lines_of(log(c, tid), "Run script"):
            assert time.monotonic() < deadline, log(c, tid)
            time.sleep(0.05)
        agent.kill()
        killed_at = time.monotonic()
        t = wait_task(c, tid, timeout=20)
        took = time.monotonic() - killed_at
    print(f"\n[loss detection] the step failed as 'worker lost' {took:.1f}s after kill -9")
    s = t["steps"][0]
    assert t["state"] == "failed" and s["state"] == "failed", t
    assert "worker lost" in s["reason"], s
    assert took <= 10.0, f"loss noticed after {took:.1f}s"
    # The step's process outlived its agent; the agent's next start ends it.
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0
    agent.start()
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    assert not list((agent.home / "work").glob("step-*"))


def test_a_second_agent_on_the_same_home_is_refused(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        agent = agents(new_pool(c), "polling").start()
    second = subprocess.run([SHOAL, "agent", "run", "--home", str(agent.home)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 2
    assert "another agent is running" in second.stderr and len(second.stderr.splitlines()) == 1


def test_work_carries_on_after_the_nats_server_restarts(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agents(pool, "polling").start()
        agents(pool, "listening").start()
        pid = int((server.data_dir / "nats" / "nats-server.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        # The server restarts its nats-server on the same port; everyone reconnects.
        ids = [script(c, "echo after restart", worker_pool_id=pool)["id"] for _ in range(4)]
        done = [wait_task(c, tid, timeout=40) for tid in ids]
        outcomes = [(d["state"], [(st["state"], st["worker_name"], st["reason"]) for st in d["steps"]])
                    for d in done]
        trouble = [line for line in server.lines if '"level":"error"' in line]
        assert all(d["state"] == "success" for d in done), (outcomes, trouble)


def test_a_result_reported_while_the_server_was_down_is_recorded_after_its_restart(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "polling").start()
        tid = script(c, "echo begun; sleep 2; echo finished-while-away", worker_pool_id=pool)["id"]
        wait_step(c, tid, "Run script", ("running",))
    server.crash()
    time.sleep(3)  # the step ends while no server listens; its reports wait in JetStream
    server.start()
    with server.client() as c:
        t = wait_task(c, tid, timeout=30)
        text = log(c, tid)
    assert t["state"] == "success", t
    assert "finished-while-away" in text
    assert t["steps"][0]["worker_name"] == agent.name


def test_deleting_the_worker_makes_its_agent_exit_by_itself(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "listening").start()
        assert c.delete(f"/api/workers/{agent.worker_id}").status_code == 204
    code = agent.wait_exit(15)
    assert code == 3
    assert "revoked" in agent.output()


def test_deregister_worker_removes_it_without_an_api_key(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "polling")
        done = subprocess.run([SHOAL, "agent", "deregister-worker", "--home", str(agent.home)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert c.get(f"/api/workers/{agent.worker_id}").status_code == 404
        deregistered = [e for e in c.get("/api/events", params={"type": "Worker.Deregistered"})
                        .json()["items"] if e["aggregate_id"] == agent.worker_id]
    assert deregistered and deregistered[0]["actor"]["kind"] == "agent"


def test_once_the_default_pool_has_an_agent_the_built_in_worker_is_retired(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        default = next(p for p in c.get("/api/worker-pools").json()["items"] if p["is_default"])
        agent = agents(default["name"], "listening").start()
        t = wait_task(c, script(c, "echo where")["id"], timeout=30)
        assert t["steps"][0]["worker_name"] == agent.name != BUILT_IN
        assert c.delete(f"/api/workers/{agent.worker_id}").status_code == 204
        back = wait_task(c, script(c, "echo home")["id"], timeout=30)
    assert back["steps"][0]["worker_name"] == BUILT_IN


def test_cancel_stops_the_step_on_the_agent(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agents(pool, "listening").start()
        marker = unique_sleep(300)
        tid = script(c, f"echo go; {marker}", worker_pool_id=pool)["id"]
        wait_step(c, tid, "Run script", ("running",))
        assert c.post(f"/api/tasks/{tid}/cancel").status_code == 200
        t = wait_task(c, tid, timeout=20)
    assert t["state"] == "cancelled" and t["steps"][0]["state"] == "cancelled", t
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left.strip() == "", f"the step's processes outlived the cancel: {left}"


def test_capacity_limits_what_one_agent_runs_at_once(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agents(pool, "polling", "--capacity", "2").start()
        ids = [script(c, "date +%s.%N; sleep 0.6; date +%s.%N", worker_pool_id=pool)["id"]
               for _ in range(4)]
        done = [wait_task(c, tid, timeout=40) for tid in ids]
        spans = []
        for tid in ids:
            lines = [ln.rsplit(" ", 1)[-1] for ln in log(c, tid).splitlines()
                     if ln.rsplit(" ", 1)[-1].replace(".", "").isdigit()]
            spans.append((float(lines[0]), float(lines[1])))
    assert all(d["state"] == "success" for d in done)
    for t0, _ in spans:
        overlapping = sum(1 for a, b in spans if a <= t0 < b)
        assert overlapping <= 2, spans


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_a_capacity_raised_on_the_server_applies_to_a_running_agent(
    server: ServerProcess, agents: Any, tmp_path: Path, style: str
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, style, "--capacity", "1").start()
        worker = c.get("/api/workers", params={"name": agent.name}).json()["items"][0]
        assert c.patch(f"/api/workers/{worker['id']}", json={"capacity": 3}).status_code == 200
        marks = [tmp_path / f"{style}-running-{i}" for i in range(3)]
        # Each step ends well only once all three have started: one at a time, none would.
        all_running = " && ".join(f"[ -e {m} ]" for m in marks)
        ids = [script(c, f"touch {mark}; for _ in $(seq 200); do {all_running} && exit 0; "
                         "sleep 0.05; done; echo 'ran alone' >&2; exit 7", worker_pool_id=pool)["id"]
               for mark in marks]
        done = [wait_task(c, tid, timeout=40) for tid in ids]
        assert [d["state"] for d in done] == ["success"] * 3, [(d, log(c, d["id"])) for d in done]
    assert {d["steps"][0]["worker_name"] for d in done} == {agent.name}


def test_agent_cli_errors(server: ServerProcess, tmp_path: Path) -> None:
    def register(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHOAL, "agent", "register-worker", "--name", rid("cli"), "--comms-style", "polling",
             "--home", str(tmp_path / rid("home")), *args],
            capture_output=True, text=True, timeout=30,
        )

    wrong_key = register("--server", server.url, "--api-key", "shoal_nope", "--worker-pool", "x")
    assert wrong_key.returncode == 3 and len(wrong_key.stderr.strip().splitlines()) == 1
    unknown = register("--server", server.url, "--api-key", server.admin_key,
                       "--worker-pool", "No Such Pool")
    assert unknown.returncode == 2 and "No Such Pool" in unknown.stderr
    gone = register("--server", "http://127.0.0.1:9", "--api-key", "k", "--worker-pool", "x")
    assert gone.returncode == 3 and "127.0.0.1:9" in gone.stderr
    with server.client() as c:
        assert c.get("/api/workers", params={"name": "cli"}).json()["total"] == 0


def test_a_step_its_lost_agent_never_started_goes_to_another_agent_and_runs_once(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        busy = agents(pool, "polling", "--capacity", "1").start()
        frozen = agents(pool, "polling", "--capacity", "1").start()
        # Keep `busy` occupied so the next step can only go to `frozen`...
        c.patch(f"/api/workers/{frozen.worker_id}", json={"is_disabled": True}).raise_for_status()
        blocker = script(c, "sleep 9", worker_pool_id=pool)["id"]
        first = wait_step(c, blocker, "Run script", ("running",))
        assert step(first, "Run script")["worker_name"] == busy.name
        c.patch(f"/api/workers/{frozen.worker_id}", json={"is_disabled": False}).raise_for_status()
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)  # ...which stops pulling and heartbeating
        try:
            tid = script(c, "echo ran-once", worker_pool_id=pool)["id"]
            assigned = wait_step(c, tid, "Run script", ("assigned",))
            assert step(assigned, "Run script")["worker_name"] == frozen.name
            t = wait_task(c, tid, timeout=40)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        frozen.wait_online(timeout=20)
        time.sleep(1)  # room for a withdrawn instruction to run, were it not withdrawn
        text = log(c, tid)
        requeued = [e for e in c.get("/api/events", params={"type": "Task.StepRequeued"}).json()
                    ["items"] if e["aggregate_id"] == tid]
    assert t["state"] == "success" and t["steps"][0]["worker_name"] == busy.name, t
    assert requeued and "worker lost" in requeued[0]["data"]["reason"]
    assert lines_of(text, "Run script").count("ran-once") == 1, text


def test_last_seen_follows_the_heartbeats(server: ServerProcess, agents: Any) -> None:
    with server.client() as c:
        agent = agents(new_pool(c), "listening").start()
        first = c.get(f"/api/workers/{agent.worker_id}").json()["last_seen"]
        time.sleep(2.5)  # a heartbeat every 2 s
        later = c.get(f"/api/workers/{agent.worker_id}").json()["last_seen"]
        listed = [w for w in c.get("/api/workers").json()["items"] if w["id"] == agent.worker_id]
        events = [e for e in c.get("/api/events", params={"limit": 1000}).json()["items"]
                  if e["aggregate_id"] == agent.worker_id]
    assert first is not None and later > first
    assert listed[0]["last_seen"] >= later
    # Heartbeats are not events: only the transition to online was recorded.
    assert [e["type"] for e in events if "Online" in e["type"] or "Offline" in e["type"]] == [
        "Worker.CameOnline"]


def test_an_agent_that_cannot_verify_the_server_refuses_and_is_passed_over(
    server: ServerProcess, agents: Any
) -> None:
    with server.client() as c:
        pool = new_pool(c)
        agent = agents(pool, "listening")
        # The agent pinned some other server's key: nothing this server signs verifies.
        registration = agent.home / "registration.json"
        data = json.loads(registration.read_text())
        data["server_key"] = public_key_text(load_private_key(new_private_key_pem()))
        registration.write_text(json.dumps(data))
        agent.start()
        tid = script(c, "echo must-not-run", worker_pool_id=pool)["id"]
        time.sleep(3)
        t = task(c, tid)
        requeued = [e for e in c.get("/api/events", params={"type": "Task.StepRequeued"}).json()
                    ["items"] if e["aggregate_id"] == tid]
        assert c.post(f"/api/tasks/{tid}/cancel").status_code == 200
        text = log(c, tid)
    assert t["steps"][0]["state"] == "waiting", t
    assert len(requeued) == 1 and "refused" in requeued[0]["data"]["reason"], requeued
    assert "must-not-run" not in lines_of(text, "Run script")
    assert "refused instruction" in agent.output()
