"""Environments and cloud-region deployment targets through the real server: CRUD,
permissions, bad input, 'in use' conflicts and the audit log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.helpers import rid

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


def _key(server: ServerProcess, *permissions: str) -> dict[str, Any]:
    with server.client() as admin:
        r = admin.post("/api/api-keys", json={"name": rid("key"), "permissions": list(permissions)})
        assert r.status_code == 201, r.text
        key: dict[str, Any] = r.json()
        return key


def _environment(c: httpx.Client, name: str | None = None) -> dict[str, Any]:
    r = c.post("/api/environments", json={"name": name or rid("env")})
    assert r.status_code == 201, r.text
    env: dict[str, Any] = r.json()
    return env


def _target_body(env: str, **fields: Any) -> dict[str, Any]:
    return {"name": rid("region"), "kind": "cloud_region", "roles": ["web"],
            "environment_ids": [env], **fields}


def test_environment_round_trip(server: ServerProcess) -> None:
    name = rid("Production")
    with server.client() as c:
        created = c.post("/api/environments", json={"name": name, "description": "live"})
        assert created.status_code == 201, created.text
        env = created.json()
        assert (env["name"], env["description"], env["target_count"]) == (name, "live", 0)
        assert int(created.headers["X-Shoal-Position"]) > 0
        assert c.get(f"/api/environments/{env['id']}").json() == env
        assert env["id"] in [e["id"] for e in c.get("/api/environments").json()["items"]]

        assert c.post("/api/environments", json={"name": name.upper()}).status_code == 409
        renamed = c.patch(f"/api/environments/{env['id']}", json={"name": name + "-x"})
        assert renamed.status_code == 200 and renamed.json()["name"] == name + "-x"
        assert c.delete(f"/api/environments/{env['id']}").status_code == 204
        assert c.get(f"/api/environments/{env['id']}").status_code == 404
        assert c.delete(f"/api/environments/{env['id']}").status_code == 404
        assert c.get("/api/environments/not-an-id").status_code == 404
        assert c.post("/api/environments", json={"name": name + "-x"}).status_code == 201


def test_target_round_trip_by_names_and_ids(server: ServerProcess) -> None:
    with server.client() as c:
        prod, test = _environment(c), _environment(c)
        pool = c.post("/api/worker-pools", json={"name": rid("regional")}).json()
        body = _target_body(
            prod["name"], roles=["web", "db", "WEB"], default_worker_pool_id=pool["name"],
            is_disabled=True,
        )
        created = c.post("/api/targets", json=body)
        assert created.status_code == 201, created.text
        target = created.json()
        assert target["kind"] == "cloud_region" and target["roles"] == ["web", "db"]
        assert target["environment_ids"] == [prod["id"]]
        assert target["default_worker_pool_id"] == pool["id"] and target["is_disabled"] is True
        # One target also lists the runs that used it (none yet).
        assert c.get(f"/api/targets/{target['id']}").json() == {**target, "runs": [], "runs_total": 0}
        assert c.get(f"/api/environments/{prod['id']}").json()["target_count"] == 1

        changed = c.patch(f"/api/targets/{target['id']}", json={
            "environment_ids": [test["id"], prod["name"]], "roles": ["api"], "is_disabled": False,
        })
        assert changed.status_code == 200, changed.text
        assert changed.json()["environment_ids"] == [test["id"], prod["id"]]
        assert changed.json()["default_worker_pool_id"] == pool["id"], "absent: kept"
        in_test = c.get("/api/targets", params={"environment": test["name"]}).json()
        assert [t["id"] for t in in_test["items"]] == [target["id"]]

        cleared = c.patch(f"/api/targets/{target['id']}", json={"default_worker_pool_id": None})
        assert cleared.json()["default_worker_pool_id"] is None
        assert c.delete(f"/api/worker-pools/{pool['id']}").status_code == 204

        assert c.delete(f"/api/targets/{target['id']}").status_code == 204
        assert c.get(f"/api/targets/{target['id']}").status_code == 404
        assert c.get(f"/api/environments/{prod['id']}").json()["target_count"] == 0
        assert c.delete(f"/api/environments/{prod['id']}").status_code == 204


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"environment_ids": ["no-such-environment"]}, "environment"),
        ({"environment_ids": []}, "environment"),
        ({"roles": []}, "role"),
        ({"roles": [" "]}, "role"),
        ({"kind": "ssh"}, "kind"),
        ({"default_worker_pool_id": "no-such-pool"}, "pool"),
        ({"name": ""}, "name"),
        ({"roles": "web"}, "roles"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_target_input_is_422(server: ServerProcess, change: dict[str, Any], words: str) -> None:
    with server.client() as c:
        env = _environment(c)
        r = c.post("/api/targets", json=_target_body(env["id"], **change))
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"]
        assert c.get(f"/api/environments/{env['id']}").json()["target_count"] == 0


def test_conflicts_are_409(server: ServerProcess) -> None:
    with server.client() as c:
        env = _environment(c)
        pool = c.post("/api/worker-pools", json={"name": rid("pool")}).json()
        body = _target_body(env["id"], default_worker_pool_id=pool["id"])
        target = c.post("/api/targets", json=body).json()
        assert c.post("/api/targets", json={**body, "name": body["name"].upper()}).status_code == 409

        in_use = c.delete(f"/api/environments/{env['id']}")
        assert in_use.status_code == 409 and target["name"] in in_use.json()["detail"]
        pool_in_use = c.delete(f"/api/worker-pools/{pool['id']}")
        assert pool_in_use.status_code == 409 and target["name"] in pool_in_use.json()["detail"]
        assert c.get(f"/api/environments/{env['id']}").status_code == 200


def test_each_permission_guards_its_routes(server: ServerProcess) -> None:
    env_view = _key(server, "EnvironmentView")
    env_edit = _key(server, "EnvironmentEdit")
    target_view = _key(server, "TargetView")
    target_edit = _key(server, "TargetEdit", "EnvironmentView")
    with server.client() as admin:
        env = _environment(admin)
        target = admin.post("/api/targets", json=_target_body(env["id"])).json()

    with server.client(env_view["key"]) as c:
        assert c.get("/api/environments").status_code == 200
        assert c.get(f"/api/environments/{env['id']}").status_code == 200
        denied = c.post("/api/environments", json={"name": rid("nope")})
        assert denied.status_code == 403 and "EnvironmentEdit" in denied.json()["detail"]
        assert c.patch(f"/api/environments/{env['id']}", json={"name": "x"}).status_code == 403
        assert c.delete(f"/api/environments/{env['id']}").status_code == 403
        assert c.get("/api/targets").status_code == 403
    with server.client(env_edit["key"]) as c:
        assert c.get("/api/environments").status_code == 403
        assert c.post("/api/environments", json={"name": rid("ok")}).status_code == 201
    with server.client(target_view["key"]) as c:
        assert c.get("/api/targets").status_code == 200
        assert c.get(f"/api/targets/{target['id']}").status_code == 200
        denied = c.post("/api/targets", json=_target_body(env["id"]))
        assert denied.status_code == 403 and "TargetEdit" in denied.json()["detail"]
        assert c.delete(f"/api/targets/{target['id']}").status_code == 403
        assert c.get("/api/environments").status_code == 403
    with server.client(target_edit["key"]) as c:
        assert c.get("/api/targets").status_code == 403
        assert c.patch(f"/api/targets/{target['id']}", json={"roles": ["db"]}).status_code == 200
        assert c.post("/api/targets", json=_target_body(env["name"])).status_code == 201
        assert c.post("/api/environments", json={"name": rid("nope")}).status_code == 403
    for path in ("/api/environments", "/api/targets"):
        assert httpx.get(f"{server.url}{path}").status_code == 401


def test_audit_log_shows_who_changed_what(server: ServerProcess) -> None:
    editor = _key(server, "EnvironmentEdit", "TargetEdit")
    with server.client(editor["key"]) as c:
        env = _environment(c)
        target = c.post("/api/targets", json=_target_body(env["id"])).json()
        assert c.patch(f"/api/targets/{target['id']}", json={"is_disabled": True}).status_code == 200
        assert c.delete(f"/api/targets/{target['id']}").status_code == 204
    actor = {"kind": "api_key", "id": editor["id"], "name": editor["name"]}
    with server.client() as admin:
        for event_type, aggregate_id in [
            ("Environment.Created", env["id"]),
            ("Environment.TargetAttached", env["id"]),
            ("Environment.TargetDetached", env["id"]),
            ("DeploymentTarget.Created", target["id"]),
            ("DeploymentTarget.Disabled", target["id"]),
            ("DeploymentTarget.Deleted", target["id"]),
        ]:
            events = admin.get("/api/events", params={"type": event_type, "limit": 1000}).json()
            mine = [e for e in events["items"] if e["aggregate_id"] == aggregate_id]
            assert len(mine) == 1 and mine[0]["actor"] == actor, event_type
        created = admin.get(
            "/api/events", params={"type": "DeploymentTarget.Created", "limit": 1000}
        ).json()
        data = next(e["data"] for e in created["items"] if e["aggregate_id"] == target["id"])
        assert data["roles"] == ["web"] and data["environment_ids"] == [env["id"]]
