"""/api/environments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, StrictStr

from adapters.http.deps import App, Container, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from domain.actors import Actor
from domain.keys import Permission
from projections.environments import get_environment, list_environments

router = APIRouter(prefix="/api/environments", tags=["environments"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.ENVIRONMENT_VIEW))]
CanEdit = Annotated[Actor, Depends(require(Permission.ENVIRONMENT_EDIT))]


class EnvironmentOut(BaseModel):
    """An environment."""

    id: str
    name: str
    description: str
    target_count: int
    created: str


class EnvironmentCreate(Request):
    """A new environment."""

    name: StrictStr
    description: StrictStr = ""


class EnvironmentPatch(Request):
    """Fields to change; absent fields stay as they are."""

    name: StrictStr | None = None
    description: StrictStr | None = None


def _read(views: Any, environment_id: str) -> EnvironmentOut:
    row = get_environment(views, environment_id)
    if row is None:
        raise not_found("environment", environment_id)
    return EnvironmentOut(**row)


@router.get("", response_model=Page[EnvironmentOut])
def list_(views: Views, _: CanView, skip: Skip = 0, take: Take = 100) -> Page[EnvironmentOut]:
    """Environments by name."""
    rows, total = list_environments(views, skip, take)
    return Page[EnvironmentOut](items=[EnvironmentOut(**r) for r in rows], total=total)


@router.post("", status_code=201, response_model=EnvironmentOut)
def create(
    body: EnvironmentCreate, app: App, container: Container, actor: CanEdit, response: Response
) -> EnvironmentOut:
    """Create an environment; 409 when the name is taken."""
    saved = app.create_environment(name=body.name, description=body.description, actor=actor)
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.get("/{environment_id}", response_model=EnvironmentOut)
def get(environment_id: str, views: Views, _: CanView) -> EnvironmentOut:
    """One environment."""
    return _read(views, str(parse_id(environment_id, "environment")))


@router.patch("/{environment_id}", response_model=EnvironmentOut)
def patch(
    environment_id: str, body: EnvironmentPatch, app: App, container: Container,
    actor: CanEdit, response: Response,
) -> EnvironmentOut:
    """Rename or describe an environment."""
    saved = app.update_environment(
        parse_id(environment_id, "environment"), name=body.name, description=body.description,
        actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.delete("/{environment_id}", status_code=204)
def delete(environment_id: str, app: App, actor: CanEdit) -> Response:
    """Delete an environment no target is in; 409 naming the targets otherwise."""
    position = app.delete_environment(parse_id(environment_id, "environment"), actor=actor)
    return Response(status_code=204, headers=position_header(position))
