"""Agents' NATS identities against the real server and its embedded nats-server: each
agent reaches only its own subjects, secrets never leave the registration answer, and
deleting a worker shuts its agent out."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.tasks_support import default_pool, events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


def register(c: httpx.Client, name: str, style: str = "listening") -> dict[str, Any]:
    r = c.post("/api/workers", json={"name": name, "pool_ids": [default_pool(c)["id"]],
                                     "comms_style": style})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    # A worker in the default pool takes work from the built-in worker: not here.
    c.patch(f"/api/workers/{body['id']}", json={"is_disabled": True}).raise_for_status()
    return body


def hello(reg: dict[str, Any], password: str) -> str:
    """Log in by hand and return the server's answer (nats-py leaves its socket open
    when a connect is refused, which this suite treats as an error)."""
    host, port = reg["nats_urls"][0].removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.recv(4096)  # INFO
        login = {"user": reg["nats_user"], "pass": password, "verbose": False, "pedantic": False}
        sock.sendall(b"CONNECT " + json.dumps(login).encode() + b"\r\nPING\r\n")
        return sock.recv(4096).decode()


async def connect(reg: dict[str, Any], errors: list[str], **extra: Any) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        reg["nats_urls"], user=reg["nats_user"], password=reg["nats_password"],
        inbox_prefix=reg["inbox_prefix"], error_cb=on_error, connect_timeout=2,
        max_reconnect_attempts=extra.pop("max_reconnect_attempts", 0), reconnect_time_wait=0.1,
        allow_reconnect=extra.pop("allow_reconnect", False), **extra,
    )


def test_an_agent_reaches_only_its_own_subjects(server: ServerProcess) -> None:
    with server.client() as c:
        a = register(c, "perm-a")["registration"]
        b = register(c, "perm-b")["registration"]

    async def scenario() -> list[str]:
        errors: list[str] = []
        nc = await connect(a, errors)
        try:
            await nc.subscribe(f"shoal.agent.{a['worker_id']}.exec")  # its own: fine
            await nc.subscribe(f"shoal.agent.{b['worker_id']}.exec")
            await nc.subscribe("_INBOX.>")
            await nc.subscribe(f"shoal.work.{b['worker_id']}")
            await nc.publish(f"shoal.reports.{b['worker_id']}", b"{}")
            await nc.publish(f"shoal.heartbeat.{b['worker_id']}", b"{}")
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.SHOAL_WORK.work_{b['worker_id']}", b"{}")
            await nc.flush()
            await asyncio.sleep(0.3)
        finally:
            await nc.close()
        return errors

    errors = " | ".join(asyncio.run(scenario())).lower()
    b_id = b["worker_id"].lower()
    for what in (f"subscription to \"shoal.agent.{b_id}.exec\"", 'subscription to "_inbox.>"',
                 f"subscription to \"shoal.work.{b_id}\"", f"publish to \"shoal.reports.{b_id}\"",
                 f"publish to \"shoal.heartbeat.{b_id}\"", f"work_{b_id}"):
        assert what in errors, f"no permissions violation for {what}: {errors}"
    assert f"shoal.agent.{a['worker_id'].lower()}.exec" not in errors


def test_a_wrong_password_is_refused(server: ServerProcess) -> None:
    with server.client() as c:
        reg = register(c, "perm-wrong")["registration"]

    assert "Authorization Violation" in hello(reg, "guess")
    assert "PONG" in hello(reg, reg["nats_password"])


def test_secrets_stay_out_of_reads_and_the_audit_log(server: ServerProcess) -> None:
    with server.client() as c:
        body = register(c, "perm-secret")
        password = body["registration"]["nats_password"]
        listed = c.get("/api/workers").text + c.get(f"/api/workers/{body['id']}").text
        audit = str(events(c, "Worker.CredentialsIssued"))
    assert password not in listed and password not in audit
    assert "nats_password" not in listed
    assert "[redacted]" in audit
    assert password not in "\n".join(server.lines)
    accounts = (Path(server.data_dir) / "nats" / "accounts.conf")
    assert password not in accounts.read_text()
    assert oct(accounts.stat().st_mode & 0o777) == "0o600"


def test_deleting_the_worker_disconnects_its_agent_for_good(server: ServerProcess) -> None:
    with server.client() as c:
        body = register(c, "perm-revoke")
    reg = body["registration"]

    async def scenario() -> None:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        nc = await connect(reg, [], closed_cb=on_closed)
        assert nc.is_connected
        with server.client() as c:
            assert c.delete(f"/api/workers/{body['id']}").status_code == 204
        # By the time DELETE answers, nats-server has dropped the agent.
        await asyncio.wait_for(closed.wait(), 2)

    asyncio.run(scenario())
    assert "Authorization Violation" in hello(reg, reg["nats_password"])


def test_an_agent_may_read_packages_but_not_write_them_or_read_artifacts(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The packages object store is read-only for agents, and the only JetStream call it
    needs (STREAM.MSG.GET on that bucket's stream) is the only one it gets."""
    from adapters.nats.bus import NatsBus
    from adapters.nats.objects import ObjectFiles

    data = b"package bytes " * 20_000  # several object-store chunks
    with server.client() as c:
        reg = register(c, "perm-packages")["registration"]
        pushed = c.post("/api/packages", data={"id": "perm-pkg", "version": "1"},
                        files={"file": ("p.bin", data)})
    assert pushed.status_code == 201, pushed.text
    sha = pushed.json()["sha256"]

    async def scenario() -> list[str]:
        bus = NatsBus(connect_timeout=3)
        await bus.start(reg["nats_urls"], "perm-packages", user=reg["nats_user"],
                        password=reg["nats_password"], inbox_prefix=reg["inbox_prefix"])
        try:
            await ObjectFiles(bus, "shoal-packages").fetch(sha, tmp_path / "fetched")
        finally:
            await bus.stop()
        errors: list[str] = []
        nc = await connect(reg, errors)
        try:
            await nc.publish("$O.shoal-packages.C.evil", b"x")  # an object-store put's chunk
            await nc.publish("$O.shoal-packages.M.ZXZpbA==", b"{}")  # and its meta
            await nc.publish("$JS.API.STREAM.MSG.DELETE.OBJ_shoal-packages", b'{"seq": 1}')
            await nc.publish("$JS.API.STREAM.PURGE.OBJ_shoal-packages", b"{}")
            await nc.publish("$JS.API.STREAM.MSG.GET.OBJ_shoal-artifacts", b'{"seq": 1}')
            await nc.publish("$JS.API.CONSUMER.CREATE.OBJ_shoal-packages", b"{}")
            await nc.flush()
            await asyncio.sleep(0.3)
        finally:
            await nc.close()
        return errors

    errors = " | ".join(asyncio.run(scenario())).lower()
    assert (tmp_path / "fetched").read_bytes() == data
    refused = ("$o.shoal-packages.c.evil", "$o.shoal-packages.m.zxzpba==",
               "$js.api.stream.msg.delete.obj_shoal-packages", "$js.api.stream.purge.obj_shoal-packages",
               "$js.api.stream.msg.get.obj_shoal-artifacts", "$js.api.consumer.create.obj_shoal-packages")
    for subject in refused:
        assert f'publish to "{subject}"' in errors, f"no permissions violation for {subject}: {errors}"
