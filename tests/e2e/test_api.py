"""Pools, workers, policies, keys and permissions through the real server."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.helpers import rid
from tests.sshworkers import ssh_json_for

pytestmark = pytest.mark.e2e


def _position(c: httpx.Client) -> int:
    return int(c.get("/api/health").json()["position"])


def test_first_start_writes_the_admin_key_readable_by_owner_only(server: ServerProcess) -> None:
    path = server.data_dir / "admin-api-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert any(server.admin_key in line for line in server.lines), "key printed once at start"
    with server.client() as c:
        pools = c.get("/api/worker-pools").json()["items"]
        policies = c.get("/api/machine-policies").json()["items"]
    assert [p["name"] for p in pools if p["is_default"]] == ["Default Worker Pool"]
    assert "Default Machine Policy" in [p["name"] for p in policies]


def test_pool_lifecycle_and_default_flag_moves(server: ServerProcess) -> None:
    name = rid("pool")
    with server.client() as c:
        created = c.post("/api/worker-pools", json={"name": name, "sort_order": 5})
        assert created.status_code == 201, created.text
        pool = created.json()
        assert pool["name"] == name and pool["is_default"] is False
        assert int(created.headers["X-Shoal-Position"]) > 0

        old_default = next(p for p in c.get("/api/worker-pools").json()["items"] if p["is_default"])
        moved = c.patch(f"/api/worker-pools/{pool['id']}", json={"is_default": True})
        assert moved.status_code == 200 and moved.json()["is_default"] is True
        defaults = [p["id"] for p in c.get("/api/worker-pools").json()["items"] if p["is_default"]]
        assert defaults == [pool["id"]]
        assert c.delete(f"/api/worker-pools/{pool['id']}").status_code == 409

        back = c.patch(f"/api/worker-pools/{old_default['id']}", json={"is_default": True})
        assert back.status_code == 200
        renamed = c.patch(f"/api/worker-pools/{pool['id']}", json={"name": name + "-x"})
        assert renamed.json()["name"] == name + "-x"
        assert c.delete(f"/api/worker-pools/{pool['id']}").status_code == 204
        assert c.get(f"/api/worker-pools/{pool['id']}").status_code == 404
        # The name is free again once the pool is gone.
        assert c.post("/api/worker-pools", json={"name": name + "-x"}).status_code == 201


def test_workers_join_pools_and_are_filtered(server: ServerProcess) -> None:
    with server.client() as c:
        pool = c.post("/api/worker-pools", json={"name": rid("linux")}).json()
        names = [rid("w") for _ in range(3)]
        styles = ["polling", "listening", "ssh"]
        for name, style in zip(names, styles, strict=True):
            r = c.post(
                "/api/workers",
                json={"name": name, "pool_ids": [pool["name"]], "comms_style": style, "capacity": 2,
                      **ssh_json_for(style)},
            )
            assert r.status_code == 201, r.text
            worker = r.json()
            assert worker["pool_ids"] == [pool["id"]] and worker["health_status"] == "unknown"

        members = c.get(f"/api/worker-pools/{pool['id']}/workers").json()
        assert members["total"] == 3 and sorted(w["name"] for w in members["items"]) == sorted(names)
        assert c.get(f"/api/worker-pools/{pool['id']}").json()["worker_count"] == 3
        polling = c.get("/api/workers", params={"pool": pool["id"], "comms_style": "polling"}).json()
        assert [w["name"] for w in polling["items"]] == [names[0]]
        page = c.get("/api/workers", params={"pool": pool["id"], "take": 2}).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        assert c.get("/api/workers", params={"name": names[1].upper()}).json()["total"] == 1

        w = polling["items"][0]
        assert c.delete(f"/api/worker-pools/{pool['id']}").status_code == 409
        patched = c.patch(f"/api/workers/{w['id']}", json={"is_disabled": True, "capacity": 7})
        assert patched.json()["is_disabled"] is True and patched.json()["capacity"] == 7
        for worker in c.get(f"/api/worker-pools/{pool['id']}/workers").json()["items"]:
            assert c.delete(f"/api/workers/{worker['id']}").status_code == 204
        assert c.get(f"/api/workers/{w['id']}").status_code == 404
        assert c.delete(f"/api/worker-pools/{pool['id']}").status_code == 204


def test_racing_creates_of_one_name_give_exactly_one_201(server: ServerProcess) -> None:
    name = rid("race")
    with server.client() as c:
        before = _position(c)

        def create(_: int) -> int:
            with server.client() as own:
                return own.post("/api/worker-pools", json={"name": name}).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(create, range(10)))
        assert sorted(codes) == [201] + [409] * 9
        created = c.get("/api/events", params={"after": before, "type": "WorkerPool.Created"})
        assert [e["data"]["name"] for e in created.json()["items"]] == [name]


def test_permissions_and_keys(server: ServerProcess) -> None:
    with server.client() as admin:
        r = admin.post("/api/api-keys", json={"name": "viewer", "permissions": ["WorkerView"]})
        assert r.status_code == 201
        viewer = r.json()
        assert viewer["key"].startswith("shoal_")
    with server.client(viewer["key"]) as c:
        assert c.get("/api/workers").status_code == 200
        denied = c.post("/api/worker-pools", json={"name": rid("nope")})
        assert denied.status_code == 403 and "ConfigureServer" in denied.json()["detail"]
        assert c.get("/api/events").status_code == 403
    bearer = httpx.get(
        f"{server.url}/api/workers", headers={"Authorization": f"Bearer {viewer['key']}"}
    )
    assert bearer.status_code == 200
    assert httpx.get(f"{server.url}/api/workers").status_code == 401
    assert httpx.get(f"{server.url}/api/workers", headers={"X-Api-Key": "shoal_x"}).status_code == 401
    with server.client() as admin:
        assert admin.delete(f"/api/api-keys/{viewer['id']}").status_code == 204
    with server.client(viewer["key"]) as c:
        assert c.get("/api/workers").status_code == 401


def test_audit_log_names_the_actor_and_hides_secrets(server: ServerProcess) -> None:
    with server.client() as admin:
        body = {"name": rid("ops"), "permissions": ["ConfigureServer"]}
        key = admin.post("/api/api-keys", json=body).json()
    with server.client(key["key"]) as ops:
        pool = ops.post("/api/worker-pools", json={"name": rid("audited")}).json()
    with server.client() as admin:
        events = admin.get("/api/events", params={"type": "WorkerPool.Created", "limit": 1000}).json()
        mine = [e for e in events["items"] if e["aggregate_id"] == pool["id"]]
        assert mine[0]["actor"] == {"kind": "api_key", "id": key["id"], "name": key["name"]}
        created = admin.get("/api/events", params={"type": "ApiKey.Created", "limit": 1000}).json()
        assert created["items"] and all(
            e["data"]["secret_hash"] == "[redacted]" for e in created["items"]
        )
        everything = admin.get("/api/events", params={"limit": 1000}).text
        assert key["key"].split("_", 2)[2] not in everything
        first = admin.get("/api/events", params={"limit": 2}).json()
        assert [e["position"] for e in first["items"]] == [1, 2] and first["next"] == 2
