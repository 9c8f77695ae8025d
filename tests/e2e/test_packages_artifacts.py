"""Packages and artifacts round trip, end to end: the real server, its built-in worker and
a real `shoal agent` (polling) process. A package pushed to the feed reaches the step's
working folder; files the script returns with shoal-artifact can be listed and downloaded."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.agents import AgentProcess
from tests.e2e.server import ServerProcess
from tests.e2e.tasks_support import lines_of, log, project, run, sh, step, wait_task
from tests.helpers import rid
from tests.ssh_support import require_sshd, running_sshd

pytestmark = pytest.mark.e2e

SCRIPT = """set -e
cat app/config.txt
cp app/config.txt out.txt
echo "ran on $SHOAL_WORKER_NAME" >> out.txt
shoal-artifact out.txt
head -c 700000 /dev/urandom > big.bin
shoal-artifact big.bin
echo x > x.txt
shoal-artifact x.txt ../x || echo "refused with $?"
"""


def tgz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def push(c: httpx.Client, package_id: str, version: str, data: bytes, file_name: str) -> httpx.Response:
    return c.post("/api/packages", data={"id": package_id, "version": version},
                  files={"file": (file_name, data, "application/octet-stream")})


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


@pytest.fixture(scope="module")
def agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """A polling agent serving a pool of its own."""
    pool = rid("pkg-agents")
    with server.client() as c:
        assert c.post("/api/worker-pools", json={"name": pool}).status_code == 201
    agent = AgentProcess(server, tmp_path_factory.mktemp("agent"), rid("pkg-agent"), [pool], "polling")
    agent.register()
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def agent_pool(agent: AgentProcess) -> str:
    return agent.pools[0]


@pytest.fixture(scope="module")
def ssh_pool(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A pool with one SSH worker on a throw-away sshd (packages and artifacts over SFTP)."""
    require_sshd()
    with running_sshd(tmp_path_factory.mktemp("sshd")) as host, server.client() as c:
        pool = rid("ssh-pkg")
        assert c.post("/api/worker-pools", json={"name": pool}).status_code == 201
        r = c.post("/api/workers", json={
            "name": rid("ssh-pkg"), "pool_ids": [pool], "comms_style": "ssh",
            "ssh": {"host": host.host, "port": host.port, "username": host.user,
                    "host_key_fingerprint": host.fingerprint, "private_key": host.private_key}})
        assert r.status_code == 201, r.text
        yield pool


def pool_for(where: str, request: pytest.FixtureRequest) -> str | None:
    """The pool a test case runs in: the built-in worker's (None), an agent's, an SSH one."""
    if where == "built-in":
        return None
    return str(request.getfixturevalue("agent_pool" if where == "agent" else "ssh_pool"))


@pytest.fixture(scope="module")
def package(server: ServerProcess) -> dict[str, Any]:
    data = tgz({"config.txt": b"hello from the package\n"})
    with server.client() as c:
        r = push(c, "app", "1.0.0", data, "app-1.0.0.tgz")
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data)
    return body


def test_the_feed_refuses_duplicates_bad_ids_and_keys_without_permission(
    server: ServerProcess, package: dict[str, Any]
) -> None:
    with server.client() as c:
        dup = push(c, "app", "1.0.0", b"other bytes", "app.tgz")
        bad = push(c, "../evil", "1", b"x", "x.txt")
        bad_name = push(c, "ok", "1", b"x", ".env")  # a folder part would simply be dropped
        listed = c.get("/api/packages", params={"id": "app"}).json()
        key = c.post("/api/api-keys", json={"name": rid("viewer"), "permissions": ["TaskView"]}).json()["key"]
    with server.client(key) as viewer:
        forbidden = push(viewer, "app", "2.0.0", b"x", "x.txt")
        cannot_list = viewer.get("/api/packages")
    assert (dup.status_code, dup.json()["detail"]) == (409, "package app version 1.0.0 already exists")
    assert bad.status_code == 422 and "package id '../evil' is not valid" in bad.json()["detail"]
    assert bad_name.status_code == 422 and "file name" in bad_name.json()["detail"]
    assert forbidden.status_code == 403 and cannot_list.status_code == 403
    assert listed["total"] == 1
    assert {k: listed["items"][0][k] for k in ("id", "version", "sha256", "file_name")} == {
        "id": "app", "version": "1.0.0", "sha256": package["sha256"], "file_name": "app-1.0.0.tgz"}


def round_trip(c: httpx.Client, pool: str | None) -> tuple[dict[str, Any], str, dict[str, Any]]:
    extra = {"worker_pool_id": pool} if pool else {}
    p = project(c, rid("pkg"), [sh("Use it", SCRIPT, packages=[{"id": "app", "version": "1.0.0"}], **extra)])
    t = wait_task(c, run(c, p["id"])["id"], timeout=30)
    listed = c.get(f"/api/tasks/{t['id']}/artifacts").json()
    return t, log(c, t["id"]), listed


@pytest.mark.parametrize("where", ["built-in", "agent", "ssh"])
def test_packages_and_artifacts_round_trip(
    server: ServerProcess, package: dict[str, Any], request: pytest.FixtureRequest, where: str
) -> None:
    with server.client() as c:
        t, text, listed = round_trip(c, pool_for(where, request))
        assert t["state"] == "success", text
        s = step(t, "Use it")
        assert (s["worker_name"] == "built-in worker") == (where == "built-in")
        assert lines_of(text, "Use it")[0] == "hello from the package"
        assert "refused with 2" in lines_of(text, "Use it")
        assert "artifact name '../x' refused: '..' is not allowed" in "\n".join(
            lines_of(text, "Use it", "stderr"))
        items = {a["name"]: a for a in listed["items"]}
        assert sorted(items) == ["big.bin", "out.txt"] and listed["total"] == 2
        out = c.get(f"/api/tasks/{t['id']}/artifacts/out.txt")
        big = c.get(f"/api/tasks/{t['id']}/artifacts/big.bin", params={"step": "Use it"})
        missing = c.get(f"/api/tasks/{t['id']}/artifacts/nope.txt")
    assert out.status_code == 200
    assert out.content == f"hello from the package\nran on {s['worker_name']}\n".encode()
    assert len(big.content) == items["big.bin"]["size"] == 700000
    assert hashlib.sha256(big.content).hexdigest() == items["big.bin"]["sha256"]
    assert missing.status_code == 404


@pytest.mark.parametrize("where", ["built-in", "agent"])
def test_an_archive_that_escapes_fails_the_step(server: ServerProcess, agent_pool: str, where: str) -> None:
    version = rid("v")
    with server.client() as c:
        assert push(c, "evil", version, tgz({"../evil": b"x"}), "evil.tgz").status_code == 201
        extra = {"worker_pool_id": agent_pool} if where == "agent" else {}
        p = project(c, rid("evil"), [
            sh("Escape", "echo ran", packages=[{"id": "evil", "version": version}], **extra)])
        t = wait_task(c, run(c, p["id"])["id"], timeout=30)
        text = log(c, t["id"])
    assert t["state"] == "failed"
    assert "member '../evil' escapes the folder" in step(t, "Escape")["reason"]
    assert "escapes the folder" in text and lines_of(text, "Escape") == []


def test_an_unknown_package_fails_the_step_naming_it(server: ServerProcess) -> None:
    with server.client() as c:
        p = project(c, rid("unknown"), [sh("Needs", "true", packages=[{"id": "nope", "version": "1"}])])
        t = wait_task(c, run(c, p["id"])["id"])
        bad = c.put(f"/api/projects/{p['id']}/process",
                    json={"steps": [sh("Bad", "true", packages=[{"id": "a/b", "version": "1"}])]})
    assert t["state"] == "failed"
    assert step(t, "Needs")["reason"] == "package nope version 1 was not pushed to the feed"
    assert bad.status_code == 422


def test_the_agent_caches_packages_by_hash(
    agent: AgentProcess, server: ServerProcess, package: dict[str, Any]
) -> None:
    with server.client() as c:  # make sure the agent has run a step with the package
        round_trip(c, agent.pools[0])
    cached = agent.home / "packages" / package["sha256"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == package["sha256"]
    assert not [p for p in (agent.home / "packages").iterdir() if p.name.endswith(".part")]
    assert list((agent.home / "work").iterdir()) == []  # step folders are gone
