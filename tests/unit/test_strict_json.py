"""Request bodies are parsed strictly (adapters/http/jsonbody.py), on every route."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

import adapters.http.routers as routers
from adapters.http.jsonbody import StrictJsonRoute


class Named(BaseModel):
    name: str
    size: float = 0.0


def _client() -> TestClient:
    router = APIRouter(route_class=StrictJsonRoute)

    @router.post("/things")
    def create(body: Named) -> dict[str, object]:
        return {"name": body.name, "size": body.size}

    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


@pytest.mark.parametrize("body", [
    '{"name": "a\\ud800"}',  # a lone surrogate: no encoder writes it out as UTF-8
    '{"name": "\\udfff b"}',
    '{"name": "x", "size": NaN}',
    '{"name": "x", "size": Infinity}',
])
def test_json_that_no_store_can_keep_is_malformed(body: str) -> None:
    r = _client().post("/things", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "JSON decode error"


def test_strict_json_still_takes_every_character() -> None:
    body = '{"name": "caf\\u00e9 \\ud83d\\udca5 \\u0000", "size": 1e3}'
    r = _client().post("/things", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.json() == {"name": "café 💥 \0", "size": 1000.0}


def test_every_router_parses_strictly() -> None:
    # A router made without route_class would take the lenient parser back for its routes.
    found = 0
    for info in pkgutil.iter_modules(routers.__path__):
        module = importlib.import_module(f"{routers.__name__}.{info.name}")
        router = getattr(module, "router", None)
        if router is None:
            continue
        routes = [r for r in router.routes if isinstance(r, APIRoute)]
        assert routes and all(isinstance(r, StrictJsonRoute) for r in routes), info.name
        found += 1
    assert found >= 13
