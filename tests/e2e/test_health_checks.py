"""POST /api/workers/{id}/health-check against the real server: who may run it, what it
refuses, an agent that is not there, and a real `shoal agent` running its policy's script."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.agents import AgentProcess
from tests.e2e.server import ServerProcess
from tests.helpers import rid
from tests.sshworkers import ssh_json_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


def new_pool(c: httpx.Client) -> str:
    """A pool of the test's own (workers in the default pool would take built-in work)."""
    r = c.post("/api/worker-pools", json={"name": rid("health")})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def register(c: httpx.Client, style: str = "listening", **extra: Any) -> dict[str, Any]:
    body = {"name": rid(style), "pool_ids": [new_pool(c)], "comms_style": style,
            **ssh_json_for(style), **extra}
    r = c.post("/api/workers", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def policy(c: httpx.Client, **settings: Any) -> str:
    r = c.post("/api/machine-policies", json={"name": rid("policy"), **settings})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def check(c: httpx.Client, worker_id: str) -> httpx.Response:
    return c.post(f"/api/workers/{worker_id}/health-check")


def test_who_may_check_and_what_cannot_be_checked(server: ServerProcess) -> None:
    with server.client() as admin:
        worker = register(admin)
        ssh = register(admin, "ssh", endpoint="ssh://deploy@127.0.0.1:22")
        viewer = admin.post("/api/api-keys", json={"name": rid("viewer"), "permissions": ["WorkerView"]})
        assert viewer.status_code == 201, viewer.text

        for missing in (str(uuid.uuid4()), "not-an-id"):
            r = check(admin, missing)
            assert r.status_code == 404 and "not found" in r.json()["detail"], r.text
        # An SSH worker whose key cannot be read is checked over SSH, and found unhealthy.
        r = check(admin, ssh["id"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "unhealthy" and "key" in r.json()["detail"], r.json()
    assert httpx.post(f"{server.url}/api/workers/{worker['id']}/health-check").status_code == 401
    with server.client("shoal_wrong") as stranger:
        assert check(stranger, worker["id"]).status_code == 401
    with server.client(viewer.json()["key"]) as c:
        r = check(c, worker["id"])
        assert r.status_code == 403 and "ConfigureServer" in r.json()["detail"]
    with server.client() as admin:  # none of that recorded a check
        assert admin.get(f"/api/workers/{worker['id']}").json()["health_detail"] == ""


def test_an_agent_that_is_not_there_is_unavailable(server: ServerProcess) -> None:
    with server.client() as c:
        worker = register(c)
        r = check(c, worker["id"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"worker_id", "status", "detail", "checked_at", "recorded"}
        assert (body["worker_id"], body["status"], body["recorded"]) == (worker["id"], "unavailable", True)
        assert "did not answer" in body["detail"]
        assert int(r.headers["X-Shoal-Position"]) > 0
        seen = c.get(f"/api/workers/{worker['id']}").json()
        assert (seen["health_status"], seen["health_detail"]) == ("unavailable", body["detail"])


def test_a_worker_that_may_be_offline_is_not_marked_by_an_unanswered_check(server: ServerProcess) -> None:
    with server.client() as c:
        roaming = policy(c, connectivity="may_be_offline")
        worker = register(c, "polling", machine_policy_id=roaming)
        r = check(c, worker["id"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["recorded"]) == ("unavailable", False)
        assert "may be offline" in body["detail"]
        assert "X-Shoal-Position" not in r.headers
        assert c.get(f"/api/workers/{worker['id']}").json()["health_status"] != "unhealthy"


@pytest.fixture
def agent(server: ServerProcess, tmp_path: Path) -> Iterator[AgentProcess]:
    with server.client() as c:
        pool = c.get(f"/api/worker-pools/{new_pool(c)}").json()["name"]
    name = rid("listening-agent")
    proc = AgentProcess(server, tmp_path / name, name, [pool], "listening")
    proc.register()
    try:
        yield proc.start()
    finally:
        proc.stop()


def use_script(c: httpx.Client, worker_id: str, script: str) -> None:
    """Put the worker under a new policy whose health script is ``script``."""
    policy_id = policy(c, health_check_script=script)
    patched = c.patch(f"/api/workers/{worker_id}", json={"machine_policy_id": policy_id})
    assert patched.status_code == 200, patched.text


def test_a_running_agent_runs_its_policys_script(server: ServerProcess, agent: AgentProcess) -> None:
    with server.client() as c:
        r = check(c, agent.worker_id)  # the default policy: disk space
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["recorded"]) in {("healthy", True), ("has_warnings", True)}
        assert "disk space free" in r.json()["detail"]

        for script, status, detail in [
            ("echo all good", "healthy", "all good"),
            ("echo cannot reach the registry >&2; exit 3", "unhealthy", "cannot reach the registry"),
        ]:
            use_script(c, agent.worker_id, script)
            r = check(c, agent.worker_id)
            assert r.status_code == 200, r.text
            assert (r.json()["status"], detail in r.json()["detail"]) == (status, True), r.text
            assert c.get(f"/api/workers/{agent.worker_id}").json()["health_status"] == status


def test_the_policy_helpers_warn_and_fail(server: ServerProcess, agent: AgentProcess) -> None:
    with server.client() as c:
        for script, status, detail in [
            ('warn_healthcheck "disk is 91% full"; echo carried on', "has_warnings", "disk is 91% full"),
            ('fail_healthcheck "no docker daemon"', "unhealthy", "no docker daemon"),
        ]:
            use_script(c, agent.worker_id, script)
            r = check(c, agent.worker_id)
            assert r.status_code == 200, r.text
            assert (r.json()["status"], detail in r.json()["detail"]) == (status, True), r.text
