"""/api/api-keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, StrictStr

from adapters.http.deps import App, require
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Request, parse_id, position_header
from domain.actors import Actor
from domain.keys import Permission

router = APIRouter(prefix="/api/api-keys", tags=["API keys"], route_class=StrictJsonRoute)

CanAdminister = Annotated[Actor, Depends(require(Permission.ADMINISTER))]


class KeyCreate(Request):
    """A new key and what it may do."""

    name: StrictStr
    permissions: list[Permission] = Field(min_length=1)


class KeyCreated(BaseModel):
    """The new key. `key` is shown here once and cannot be recovered later."""

    id: str
    name: str
    permissions: list[Permission]
    key: str


@router.post("", status_code=201, response_model=KeyCreated)
def create(body: KeyCreate, app: App, actor: CanAdminister, response: Response) -> KeyCreated:
    """Issue a key."""
    saved, text = app.create_key(name=body.name, permissions=tuple(body.permissions), actor=actor)
    response.headers.update(position_header(saved.position))
    key = saved.aggregate
    return KeyCreated(id=str(key.id), name=key.name, permissions=list(key.permissions), key=text)


@router.delete("/{key_id}", status_code=204)
def revoke(key_id: str, app: App, actor: CanAdminister) -> Response:
    """Revoke a key; requests with it are refused from now on."""
    position = app.revoke_key(parse_id(key_id, "API key"), actor=actor)
    return Response(status_code=204, headers=position_header(position))
