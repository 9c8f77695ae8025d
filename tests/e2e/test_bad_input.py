"""Every bad request gets a clear 4xx and leaves no event behind (and odd input that is
not bad is answered, never with a 500)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.helpers import rid
from tests.sshworkers import SSH_JSON

pytestmark = pytest.mark.e2e

Call = Callable[[httpx.Client, dict[str, str]], httpx.Response]


def _setup(c: httpx.Client) -> dict[str, str]:
    """Things the cases refer to: a pool with a worker, the default pool."""
    pool = c.post("/api/worker-pools", json={"name": rid("busy")}).json()
    c.post("/api/workers", json={"name": rid("w"), "pool_ids": [pool["id"]], "comms_style": "ssh",
                                 "ssh": SSH_JSON})
    default = next(p for p in c.get("/api/worker-pools").json()["items"] if p["is_default"])
    return {"busy": pool["id"], "busy_name": pool["name"], "default": default["id"]}


CASES: list[tuple[str, Call, int, str]] = [
    ("malformed JSON", lambda c, r: c.post("/api/worker-pools", content=b"{nope",
                                            headers={"Content-Type": "application/json"}), 422, "JSON"),
    ("wrong type", lambda c, r: c.post("/api/worker-pools", json={"name": 42}), 422, "name"),
    ("missing field", lambda c, r: c.post("/api/workers", json={"name": "x"}), 422, "pool_ids"),
    ("unknown field", lambda c, r: c.post("/api/worker-pools", json={"name": rid(), "colour": "red"}),
     422, "colour"),
    ("bad enum", lambda c, r: c.post("/api/workers", json={"name": rid(), "pool_ids": [r["busy"]],
                                                            "comms_style": "carrier-pigeon"}), 422,
     "comms_style"),
    ("empty name", lambda c, r: c.post("/api/worker-pools", json={"name": "  "}), 422, "empty"),
    ("unknown pool id", lambda c, r: c.get(f"/api/worker-pools/{uuid.uuid4()}"), 404, "not found"),
    ("not an id", lambda c, r: c.patch("/api/workers/xyz", json={"capacity": 2}), 404, "not found"),
    ("unknown worker delete", lambda c, r: c.delete(f"/api/workers/{uuid.uuid4()}"), 404, "not found"),
    ("duplicate name", lambda c, r: c.post("/api/worker-pools", json={"name": r["busy_name"].upper()}),
     409, "already exists"),
    ("delete default pool", lambda c, r: c.delete(f"/api/worker-pools/{r['default']}"), 409, "default"),
    ("un-default the default", lambda c, r: c.patch(f"/api/worker-pools/{r['default']}",
                                                     json={"is_default": False}), 409, "default"),
    ("delete non-empty pool", lambda c, r: c.delete(f"/api/worker-pools/{r['busy']}"), 409, "worker"),
    ("worker in missing pool", lambda c, r: c.post("/api/workers", json={
        "name": rid(), "pool_ids": [str(uuid.uuid4())], "comms_style": "polling"}), 422, "does not exist"),
    ("worker with missing policy", lambda c, r: c.post("/api/workers", json={
        "name": rid(), "pool_ids": [r["busy"]], "comms_style": "polling",
        "machine_policy_id": str(uuid.uuid4())}), 422, "does not exist"),
    ("capacity zero", lambda c, r: c.post("/api/workers", json={
        "name": rid(), "pool_ids": [r["busy"]], "comms_style": "polling", "capacity": 0}), 422,
     "capacity"),
    ("policy interval too short", lambda c, r: c.post("/api/machine-policies", json={
        "name": rid(), "health_check_interval_s": 1}), 422, "interval"),
    ("key without permissions", lambda c, r: c.post("/api/api-keys", json={
        "name": rid(), "permissions": []}), 422, "permissions"),
    ("unknown permission", lambda c, r: c.post("/api/api-keys", json={
        "name": rid(), "permissions": ["RootOfAllEvil"]}), 422, "permissions"),
    ("body over 1 MiB", lambda c, r: c.post("/api/worker-pools", json={
        "name": rid(), "description": "x" * (1024 * 1024 + 10)}), 413, "larger"),
    ("take too large", lambda c, r: c.get("/api/workers", params={"take": 100000}), 422, "take"),
    ("bad health filter", lambda c, r: c.get("/api/workers", params={"health": "sparkling"}), 422,
     "health"),
    # Numbers too big for a 64-bit column must be refused, never stored (a stored one would
    # stop the projections) nor passed to the database (a 500).
    ("huge skip", lambda c, r: c.get("/api/worker-pools", params={"skip": 10**30}), 422, "skip"),
    ("huge after", lambda c, r: c.get("/api/events", params={"after": 10**30}), 422, "after"),
    ("huge sort_order", lambda c, r: c.post("/api/worker-pools", json={"name": rid(),
                                                                       "sort_order": 10**30}), 422,
     "sort_order"),
    ("huge cleanup_after_s", lambda c, r: c.post("/api/machine-policies", json={
        "name": rid(), "cleanup": "delete_unavailable", "cleanup_after_s": 10**30}), 422,
     "cleanup_after_s"),
    # JSON Python's own parser takes but no store can keep (a lone surrogate cannot be
    # written as UTF-8): refused as malformed, never a 500 from the save.
    ("lone surrogate in a name", lambda c, r: _raw(c, "/api/projects", '{"name": "a\\ud800"}'), 422,
     "JSON"),
    ("lone surrogate in a description", lambda c, r: _raw(
        c, "/api/worker-pools", '{"name": "' + rid() + '", "description": "\\udfff"}'), 422, "JSON"),
    ("lone surrogate in a script", lambda c, r: _raw(
        c, "/api/tasks/script", '{"syntax": "bash", "script_body": "echo \\ud83d"}'), 422, "JSON"),
    ("NaN", lambda c, r: _raw(c, "/api/worker-pools", '{"name": "x", "sort_order": NaN}'), 422, "JSON"),
    # PostgreSQL's text holds no NUL: a filter with one must not reach it as a 500.
    ("NUL in a filter", lambda c, r: c.get("/api/workers", params={"name": "a\0b"}), 200, ""),
]


def _raw(c: httpx.Client, path: str, body: str) -> httpx.Response:
    return c.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def _last_position(c: httpx.Client) -> int:
    """The position of the newest event (the log may be longer than one page)."""
    after = 0
    while True:
        page = c.get("/api/events", params={"after": after, "limit": 1000}).json()
        if page["items"]:
            after = page["items"][-1]["position"]
        if page["next"] is None:
            return after
        after = page["next"]


@pytest.mark.parametrize(("label", "call", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_and_changes_nothing(
    server: ServerProcess, label: str, call: Call, status: int, words: str
) -> None:
    with server.client() as c:
        refs = _setup(c)
        last = _last_position(c)
        response = call(c, refs)
        assert response.status_code == status, response.text
        if status < 300:
            assert response.json()["items"] == []
        else:
            detail = response.json()["detail"]
            assert isinstance(detail, str) and words.lower() in detail.lower(), detail
        after = c.get("/api/events", params={"after": last, "limit": 1000}).json()["items"]
        # Only what the request did: the server goes on with its own work meanwhile (it
        # health-checks the SSH worker the set-up registered, a few seconds later).
        ours = [e for e in after if (e["actor"] or {}).get("kind") != "system"]
        assert ours == [], f"{label} left events behind: {ours}"


def test_missing_key_and_wrong_key_are_401(server: ServerProcess) -> None:
    for headers in ({}, {"X-Api-Key": "shoal_" + "0" * 32 + "_nope"}, {"Authorization": "Bearer x"}):
        r = httpx.post(f"{server.url}/api/worker-pools", json={"name": rid()}, headers=headers)
        assert r.status_code == 401 and r.json()["detail"]


def test_openapi_describes_every_route(server: ServerProcess) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/api/health", "/api/worker-pools", "/api/worker-pools/{pool_id}",
                 "/api/worker-pools/{pool_id}/workers", "/api/workers", "/api/workers/{worker_id}",
                 "/api/machine-policies", "/api/machine-policies/{policy_id}", "/api/api-keys",
                 "/api/api-keys/{key_id}", "/api/events", "/api/events/stream"):
        assert path in spec["paths"], path
    assert "PoolCreate" in spec["components"]["schemas"]
