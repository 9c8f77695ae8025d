"""/api/targets: deployment targets (kind cloud_region for now)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, StrictBool, StrictStr

from adapters.http.deps import App, Container, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import NotFound, Rejected
from domain.keys import Permission
from domain.plan import StepState, TaskState
from domain.targets import KEEP, Keep, TargetKind
from projections.targets import get_target, list_targets
from projections.tasks import target_runs

router = APIRouter(prefix="/api/targets", tags=["deployment targets"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.TARGET_VIEW))]
CanEdit = Annotated[Actor, Depends(require(Permission.TARGET_EDIT))]
POOL_HELP = "A worker pool id or name; the target's steps run there by default"


class TargetOut(BaseModel):
    """A deployment target."""

    id: str
    name: str
    kind: TargetKind
    roles: list[str]
    environment_ids: list[str]
    default_worker_pool_id: str | None
    is_disabled: bool
    created: str


class TargetRunOut(BaseModel):
    """One execution of a step on behalf of the target, with its task."""

    task_id: str
    task_name: str
    task_state: TaskState
    environment: str | None
    step: str
    state: StepState
    worker_id: str | None
    worker_name: str | None
    exit_code: int | None
    started: str | None
    finished: str | None


class TargetDetailOut(TargetOut):
    """A target with the runs that used it, newest first (the latest RECENT_RUNS; all
    of them under /api/targets/{id}/runs)."""

    runs: list[TargetRunOut]
    runs_total: int


RECENT_RUNS = 20


class TargetCreate(Request):
    """A new target."""

    name: StrictStr
    kind: TargetKind
    roles: list[StrictStr] = Field(description="One or more role names")
    environment_ids: list[StrictStr] = Field(description="Environment ids or names")
    default_worker_pool_id: StrictStr | None = Field(None, description=POOL_HELP)
    is_disabled: StrictBool = False


class TargetPatch(Request):
    """Fields to change; absent fields stay as they are (`default_worker_pool_id: null`
    clears the default pool)."""

    name: StrictStr | None = None
    roles: list[StrictStr] | None = None
    environment_ids: list[StrictStr] | None = None
    default_worker_pool_id: StrictStr | None = Field(None, description=POOL_HELP)
    is_disabled: StrictBool | None = None


def _environment_ids(app: Shoal, refs: list[str]) -> tuple[UUID, ...]:
    ids = []
    for ref in refs:
        try:
            ids.append(app.resolve_environment(ref).id)
        except NotFound:
            raise Rejected(f"environment {ref!r} does not exist") from None
    return tuple(ids)


def _pool_id(app: Shoal, ref: str | None) -> UUID | None:
    if ref is None:
        return None
    try:
        return app.resolve_pool(ref).id
    except NotFound:
        raise Rejected(f"worker pool {ref!r} does not exist") from None


def _read(views: Any, target_id: str) -> TargetOut:
    row = get_target(views, target_id)
    if row is None:
        raise not_found("target", target_id)
    return TargetOut(**row)


@router.get("", response_model=Page[TargetOut])
def list_(
    app: App, views: Views, _: CanView, environment: str | None = None,
    skip: Skip = 0, take: Take = 100,
) -> Page[TargetOut]:
    """Targets by name, only those in ``environment`` (id or name) when given."""
    environment_id = str(app.resolve_environment(environment).id) if environment else None
    rows, total = list_targets(views, environment=environment_id, skip=skip, take=take)
    return Page[TargetOut](items=[TargetOut(**r) for r in rows], total=total)


@router.post("", status_code=201, response_model=TargetOut)
def create(
    body: TargetCreate, app: App, container: Container, actor: CanEdit, response: Response
) -> TargetOut:
    """Create a target; 409 when the name is taken, 422 when it has no role or names an
    environment or pool that does not exist."""
    saved = app.create_target(
        name=body.name, kind=body.kind, roles=tuple(body.roles),
        environment_ids=_environment_ids(app, body.environment_ids),
        default_worker_pool_id=_pool_id(app, body.default_worker_pool_id),
        is_disabled=body.is_disabled, actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.get("/{target_id}", response_model=TargetDetailOut)
def get(target_id: str, views: Views, _: CanView) -> TargetDetailOut:
    """One target and the latest runs that used it."""
    target = _read(views, str(parse_id(target_id, "target")))
    runs, total = target_runs(views, target.id, take=RECENT_RUNS)
    return TargetDetailOut(
        **target.model_dump(), runs=[TargetRunOut(**r) for r in runs], runs_total=total
    )


@router.get("/{target_id}/runs", response_model=Page[TargetRunOut])
def runs(
    target_id: str, views: Views, _: CanView, skip: Skip = 0, take: Take = 100
) -> Page[TargetRunOut]:
    """Every execution on behalf of the target, newest first."""
    target = _read(views, str(parse_id(target_id, "target")))
    rows, total = target_runs(views, target.id, skip=skip, take=take)
    return Page[TargetRunOut](items=[TargetRunOut(**r) for r in rows], total=total)


@router.patch("/{target_id}", response_model=TargetOut)
def patch(
    target_id: str, body: TargetPatch, app: App, container: Container, actor: CanEdit,
    response: Response,
) -> TargetOut:
    """Change a target."""
    pool: UUID | Keep | None = KEEP
    if "default_worker_pool_id" in body.model_fields_set:
        pool = _pool_id(app, body.default_worker_pool_id)
    saved = app.update_target(
        parse_id(target_id, "target"),
        name=body.name,
        roles=None if body.roles is None else tuple(body.roles),
        environment_ids=(
            None if body.environment_ids is None else _environment_ids(app, body.environment_ids)
        ),
        default_worker_pool_id=pool,
        is_disabled=body.is_disabled,
        actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.delete("/{target_id}", status_code=204)
def delete(target_id: str, app: App, actor: CanEdit) -> Response:
    """Delete a target; its environments and default pool are freed of it."""
    position = app.delete_target(parse_id(target_id, "target"), actor=actor)
    return Response(status_code=204, headers=position_header(position))
