"""/api/worker-pools."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, StrictBool, StrictInt, StrictStr

from adapters.http.deps import App, Container, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.routers.workers import WorkerOut
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from domain.actors import Actor
from domain.keys import Permission
from projections.pools import get_pool, list_pools
from projections.workers import list_workers

router = APIRouter(prefix="/api/worker-pools", tags=["worker pools"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.WORKER_VIEW))]
CanConfigure = Annotated[Actor, Depends(require(Permission.CONFIGURE_SERVER))]


class PoolOut(BaseModel):
    """A worker pool."""

    id: str
    name: str
    description: str
    is_default: bool
    sort_order: int
    worker_count: int
    created: str


class PoolCreate(Request):
    """A new pool."""

    name: StrictStr
    description: StrictStr = ""
    is_default: StrictBool = False
    sort_order: StrictInt = 0


class PoolPatch(Request):
    """Fields to change; absent fields stay as they are."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    is_default: StrictBool | None = None
    sort_order: StrictInt | None = None


def _read(views: Any, pool_id: str) -> PoolOut:
    row = get_pool(views, pool_id)
    if row is None:
        raise not_found("worker pool", pool_id)
    return PoolOut(**row)


@router.get("", response_model=Page[PoolOut])
def list_(views: Views, _: CanView, skip: Skip = 0, take: Take = 100) -> Page[PoolOut]:
    """Pools by sort order, then name."""
    rows, total = list_pools(views, skip, take)
    return Page[PoolOut](items=[PoolOut(**r) for r in rows], total=total)


@router.post("", status_code=201, response_model=PoolOut)
def create(
    body: PoolCreate, app: App, container: Container, actor: CanConfigure, response: Response
) -> PoolOut:
    """Create a pool; 409 when the name is taken."""
    saved = app.create_pool(
        name=body.name, description=body.description, sort_order=body.sort_order,
        is_default=body.is_default, actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.get("/{pool_id}", response_model=PoolOut)
def get(pool_id: str, views: Views, _: CanView) -> PoolOut:
    """One pool."""
    return _read(views, str(parse_id(pool_id, "worker pool")))


@router.patch("/{pool_id}", response_model=PoolOut)
def patch(
    pool_id: str, body: PoolPatch, app: App, container: Container, actor: CanConfigure,
    response: Response,
) -> PoolOut:
    """Change a pool. `is_default: true` moves the default flag here atomically."""
    saved = app.update_pool(
        parse_id(pool_id, "worker pool"), name=body.name, description=body.description,
        sort_order=body.sort_order, is_default=body.is_default, actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.delete("/{pool_id}", status_code=204)
def delete(pool_id: str, app: App, actor: CanConfigure) -> Response:
    """Delete an empty pool that is not the default; 409 otherwise."""
    position = app.delete_pool(parse_id(pool_id, "worker pool"), actor=actor)
    return Response(status_code=204, headers=position_header(position))


@router.get("/{pool_id}/workers", response_model=Page[WorkerOut])
def members(
    pool_id: str, app: App, views: Views, _: CanView, skip: Skip = 0, take: Take = 100
) -> Page[WorkerOut]:
    """The pool's workers, by name."""
    pool = app.get_pool(parse_id(pool_id, "worker pool"))
    rows, total = list_workers(views, pool=str(pool.id), skip=skip, take=take)
    return Page[WorkerOut](items=[WorkerOut(**r) for r in rows], total=total)
