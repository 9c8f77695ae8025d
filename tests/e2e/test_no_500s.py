"""Malformed input at every route of the real server, on SQLite and on PostgreSQL:
whatever the body, ids and query values, the answer is never a 5xx (503, "try again
shortly", aside) and the server logs no traceback. The requests come from the server's
own OpenAPI schema, so a new route is covered the day it is added."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

# Per route and method; with a fixed seed, the same requests every run.
CASES = 30
SEED = 20261207
ODD: list[Any] = [
    None, True, False, 0, -1, 1.5, -1e308, 2**63, -(2**63), 2**64, "", " ", "x" * 5000, "\u0000",
    "ro\u0000ot", "../../etc/passwd", "/abs", "💥", "null", [], [1], {}, {"a": 1}, "not-a-uuid",
    "00000000-0000-0000-0000-000000000000", "NaN", "-1", "9" * 400,
    # Lone surrogates and NaN: Python's json takes them, no store can keep them.
    "\ud800", "a\udfffb", float("nan"), float("inf"),
]
PLAUSIBLE: dict[str, list[Any]] = {
    "string": ["bash", "sh", "python", "echo hi", "a", "after_previous", "with_previous",
               "success", "failure", "always", "script", "email", "manual_intervention",
               "import_certificate", "listening", "polling", "x@y.z", "127.0.0.1"],
    "integer": [1, 2, 22, 3600], "number": [1.0, 0.5], "boolean": [True, False],
}
QUERY_VALUES = ["-1", "0", "1", "99999999999999999999", "x", "", "true", "💥", "success", "a\u0000b"]
# Streams that never end by themselves (their bad input is covered elsewhere).
ENDLESS = ("/api/events/stream",)


class Maker:
    """Request bodies shaped like the schema, with odd values at random places."""

    def __init__(self, spec: dict[str, Any], rng: random.Random, ids: list[str]) -> None:
        self.spec, self.rng, self.ids = spec, rng, ids

    def body(self, schema: dict[str, Any], depth: int = 0) -> Any:
        rng = self.rng
        if depth > 6 or rng.random() < 0.25:
            return rng.choice(ODD)
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return self.body(self.spec["components"]["schemas"][name], depth + 1)
        for key in ("anyOf", "oneOf", "allOf"):
            if key in schema:
                return self.body(rng.choice(schema[key]), depth + 1)
        if "enum" in schema:
            return rng.choice([*schema["enum"], rng.choice(ODD)])
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return {name: self.body(sub, depth + 1)
                    for name, sub in schema.get("properties", {}).items() if rng.random() < 0.85}
        if kind == "array":
            return [self.body(schema.get("items", {}), depth + 1) for _ in range(rng.randrange(4))]
        return rng.choice([*PLAUSIBLE.get(kind or "", ODD), *self.ids])

    def request(self, path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        url = re.sub(r"\{[^}]+\}", lambda _: rng.choice([*self.ids, "nope", "💥", "%2e%2e"]), path)
        params = {p["name"]: "0" if p["name"] == "follow" else rng.choice(QUERY_VALUES)
                  for p in op.get("parameters", []) if p["in"] == "query" and rng.random() < 0.7}
        asked: dict[str, Any] = {"method": method.upper(), "url": url, "params": params}
        if method in ("post", "put", "patch"):
            roll = rng.random()
            if roll < 0.15:
                asked["content"] = b"{not json"
            else:
                content = op.get("requestBody", {}).get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                body = rng.choice(ODD) if roll < 0.25 else self.body(schema)
                # As a client may write it: lone surrogates escaped, NaN as a bare word.
                asked["content"] = json.dumps(body).encode()
                asked["headers"] = {"Content-Type": "application/json"}
        return asked


def test_no_route_answers_5xx_to_malformed_input(server: ServerProcess) -> None:
    # On both back ends: PostgreSQL refuses some text SQLite keeps (a NUL, say).
    srv = server
    with srv.client() as c:
        spec = c.get("/openapi.json").json()
        pool = c.post("/api/worker-pools", json={"name": "odd-input"}).json()["id"]
        project = c.post("/api/projects", json={"name": "odd-input"}).json()["id"]
        task = c.post("/api/tasks/script", json={"syntax": "bash", "script_body": "true"}).json()["id"]
        maker = Maker(spec, random.Random(SEED), [pool, project, task])
        failures, asked = [], 0
        for path, operations in spec["paths"].items():
            if path in ENDLESS:
                continue
            for method, op in operations.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                for _ in range(CASES):
                    req = maker.request(path, method, op)
                    try:
                        r = c.request(**req, timeout=30)
                    except httpx.HTTPError as exc:
                        failures.append((req, f"{type(exc).__name__}: {exc}"))
                        continue
                    asked += 1
                    if r.status_code >= 500 and r.status_code != 503:
                        failures.append((req, r.status_code, r.text[:200]))
    output = "".join(srv.lines)
    assert asked > 500, f"only {asked} requests: is /openapi.json complete?"
    assert not failures, failures[:10]
    assert "Traceback" not in output and "unhandled error" not in output, output[-3000:]


def test_the_schema_lists_the_routes_this_test_relies_on(server: ServerProcess) -> None:
    # Guards the test above: it covers only what /openapi.json lists.
    with server.client() as c:
        paths = set(c.get("/openapi.json").json()["paths"])
    for expected in ("/api/tasks/script", "/api/workers", "/api/projects/{project_id}/process",
                     "/api/configuration/built-in-worker", "/api/machine-policies"):
        assert expected in paths, sorted(paths)
