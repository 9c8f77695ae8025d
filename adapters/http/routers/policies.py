"""/api/machine-policies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, StrictInt, StrictStr

from adapters.http.deps import App, Container, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from domain.actors import Actor
from domain.keys import Permission
from domain.policies import DEFAULT_HEALTH_SCRIPT, DEFAULT_INTERVAL_S, CleanUp, Connectivity
from projections.policies import get_policy, list_policies

router = APIRouter(prefix="/api/machine-policies", tags=["machine policies"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.WORKER_VIEW))]
CanConfigure = Annotated[Actor, Depends(require(Permission.CONFIGURE_SERVER))]


class PolicyOut(BaseModel):
    """A machine policy."""

    id: str
    name: str
    description: str
    health_check_interval_s: int
    health_check_script: str
    connectivity: Connectivity
    cleanup: CleanUp
    cleanup_after_s: int | None
    created: str


class PolicyCreate(Request):
    """A new machine policy."""

    name: StrictStr
    description: StrictStr = ""
    health_check_interval_s: StrictInt = DEFAULT_INTERVAL_S
    health_check_script: StrictStr = DEFAULT_HEALTH_SCRIPT
    connectivity: Connectivity = Connectivity.EXPECTED_ONLINE
    cleanup: CleanUp = CleanUp.KEEP
    cleanup_after_s: StrictInt | None = None


class PolicyPatch(Request):
    """Fields to change; absent fields stay as they are."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    health_check_interval_s: StrictInt | None = None
    health_check_script: StrictStr | None = None
    connectivity: Connectivity | None = None
    cleanup: CleanUp | None = None
    cleanup_after_s: StrictInt | None = None


def _read(views: Any, policy_id: str) -> PolicyOut:
    row = get_policy(views, policy_id)
    if row is None:
        raise not_found("machine policy", policy_id)
    return PolicyOut(**row)


@router.get("", response_model=Page[PolicyOut])
def list_(views: Views, _: CanView, skip: Skip = 0, take: Take = 100) -> Page[PolicyOut]:
    """Policies by name."""
    rows, total = list_policies(views, skip, take)
    return Page[PolicyOut](items=[PolicyOut(**r) for r in rows], total=total)


@router.post("", status_code=201, response_model=PolicyOut)
def create(
    body: PolicyCreate, app: App, container: Container, actor: CanConfigure, response: Response
) -> PolicyOut:
    """Create a policy; 409 when the name is taken."""
    saved = app.create_policy(**body.model_dump(), actor=actor)
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.get("/{policy_id}", response_model=PolicyOut)
def get(policy_id: str, views: Views, _: CanView) -> PolicyOut:
    """One policy."""
    return _read(views, str(parse_id(policy_id, "machine policy")))


@router.patch("/{policy_id}", response_model=PolicyOut)
def patch(
    policy_id: str, body: PolicyPatch, app: App, container: Container, actor: CanConfigure,
    response: Response,
) -> PolicyOut:
    """Change a policy."""
    saved = app.update_policy(
        parse_id(policy_id, "machine policy"), **body.model_dump(), actor=actor
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))
