"""Every route checks its permission, as CONTRACT.md's table says: without a key it is
401; with a key that holds every other permission (Administer aside) it is 403 naming
the one it lacks; with just that one, it is let through. The routes come from the
server's own OpenAPI schema, and a route this table does not know fails the test, so a
new route gets a decision the day it is added."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.e2e.tasks_support import OptionServer

pytestmark = pytest.mark.e2e

VIEW_OR_CHANGE = {
    # path prefix: (permission to read, permission to change)
    "/api/worker-pools": ("WorkerView", "ConfigureServer"),
    "/api/workers": ("WorkerView", "ConfigureServer"),
    "/api/machine-policies": ("WorkerView", "ConfigureServer"),
    "/api/projects": ("ProjectView", "ProjectEdit"),
    "/api/environments": ("EnvironmentView", "EnvironmentEdit"),
    "/api/targets": ("TargetView", "TargetEdit"),
    "/api/tasks": ("TaskView", "TaskCreate"),
    "/api/packages": ("PackageView", "PackagePush"),
    "/api/configuration": ("Administer", "Administer"),
    "/api/events": ("Administer", "Administer"),
    "/api/api-keys": ("Administer", "Administer"),
}
ALL = ["Administer", "ConfigureServer", "WorkerView", "ProjectView", "ProjectEdit", "TaskView",
       "TaskCreate", "EnvironmentView", "EnvironmentEdit", "TargetView", "TargetEdit",
       "PackagePush", "PackageView"]


def needed(method: str, path: str) -> str:
    """The permission CONTRACT.md gives the route."""
    if method == "POST" and re.fullmatch(r"/api/projects/\{[^}]+\}/runs", path):
        return "TaskCreate"  # running a project is creating a task
    for prefix, (view, change) in VIEW_OR_CHANGE.items():
        if path == prefix or path.startswith(prefix + "/"):
            return view if method == "GET" else change
    raise AssertionError(f"{method} {path}: a route CONTRACT.md's table does not cover")


def routes(srv: OptionServer) -> list[tuple[str, str]]:
    with srv.client() as c:
        spec = c.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
            if path != "/api/health"]


def key_with(srv: OptionServer, permissions: list[str]) -> str:
    with srv.client() as c:
        r = c.post("/api/api-keys", json={"name": f"perm-{uuid.uuid4().hex[:8]}",
                                          "permissions": permissions})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def status(srv: OptionServer, method: str, path: str, key: str | None) -> tuple[int, str]:
    """Ask once (any id a random one, an empty JSON body); the status and the detail. A
    stream is hung up on once its answer starts."""
    url = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)
    headers = {} if key is None else {"X-Api-Key": key}
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    with httpx.Client(base_url=srv.url, timeout=30) as c, \
            c.stream(method, url, headers=headers, **body) as r:
        if r.status_code >= 400:
            r.read()
            return r.status_code, str(r.json().get("detail", ""))
        return r.status_code, ""


def test_every_route_checks_its_permission(srv: OptionServer) -> None:
    table = routes(srv)
    assert len(table) > 40, table
    wrong = []
    lacking = {p: key_with(srv, [q for q in ALL if q not in (p, "Administer")]) for p in ALL}
    only = {p: key_with(srv, [p]) for p in ALL}
    for method, path in table:
        permission = needed(method, path)
        anonymous, _ = status(srv, method, path, None)
        refused, why = status(srv, method, path, lacking[permission])
        allowed, _ = status(srv, method, path, only[permission])
        if anonymous != 401:
            wrong.append((method, path, "no key", anonymous))
        if refused != 403 or permission not in why:
            wrong.append((method, path, f"all but {permission}", refused, why))
        if allowed in (401, 403):
            wrong.append((method, path, f"only {permission}", allowed))
    assert not wrong, wrong
