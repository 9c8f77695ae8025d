"""/api/projects and their processes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, Field, StrictStr

from adapters.http.deps import App, Container, Tasks, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.routers.tasks import TaskOut, new_task
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from adapters.http.steps import StepIn, StepOut, to_step
from domain.actors import Actor
from domain.keys import Permission
from projections.projects import get_project, list_projects

router = APIRouter(prefix="/api/projects", tags=["projects"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.PROJECT_VIEW))]
CanEdit = Annotated[Actor, Depends(require(Permission.PROJECT_EDIT))]
CanRun = Annotated[Actor, Depends(require(Permission.TASK_CREATE))]


class ProjectOut(BaseModel):
    """A project and its process."""

    id: str
    name: str
    description: str
    steps: list[StepOut]
    created: str


class ProjectCreate(Request):
    """A new project."""

    name: StrictStr
    description: StrictStr = ""


class ProjectPatch(Request):
    """Fields to change."""

    name: StrictStr | None = None
    description: StrictStr | None = None


class ProcessIn(Request):
    """The whole process: the steps in order."""

    steps: list[StepIn]


class RunIn(Request):
    """Options of a run."""

    environment: StrictStr | None = Field(
        None, description="Environment to deploy into (name or id); steps on behalf of "
        "roles run for its targets"
    )


def _read(views: Any, project_id: str) -> ProjectOut:
    row = get_project(views, project_id)
    if row is None:
        raise not_found("project", project_id)
    return ProjectOut(**row)


@router.get("", response_model=Page[ProjectOut])
def list_(views: Views, _: CanView, skip: Skip = 0, take: Take = 100) -> Page[ProjectOut]:
    """Projects by name."""
    rows, total = list_projects(views, skip, take)
    return Page[ProjectOut](items=[ProjectOut(**r) for r in rows], total=total)


@router.post("", status_code=201, response_model=ProjectOut)
def create(
    body: ProjectCreate, app: App, container: Container, actor: CanEdit, response: Response
) -> ProjectOut:
    """Create a project (409 when the name is taken)."""
    saved = app.create_project(name=body.name, description=body.description, actor=actor)
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.get("/{project_id}", response_model=ProjectOut)
def get(project_id: str, views: Views, _: CanView) -> ProjectOut:
    """One project."""
    return _read(views, str(parse_id(project_id, "project")))


@router.patch("/{project_id}", response_model=ProjectOut)
def patch(
    project_id: str, body: ProjectPatch, app: App, container: Container, actor: CanEdit,
    response: Response,
) -> ProjectOut:
    """Rename or describe a project."""
    saved = app.update_project(
        parse_id(project_id, "project"), name=body.name, description=body.description, actor=actor
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.delete("/{project_id}", status_code=204)
def delete(project_id: str, app: App, actor: CanEdit) -> Response:
    """Delete a project; its past tasks stay."""
    position = app.delete_project(parse_id(project_id, "project"), actor=actor)
    return Response(status_code=204, headers=position_header(position))


@router.put("/{project_id}/process", response_model=ProjectOut)
def set_process(
    project_id: str, body: ProcessIn, app: App, container: Container, actor: CanEdit,
    response: Response,
) -> ProjectOut:
    """Replace the project's process. Every step is checked before anything is saved."""
    steps = tuple(to_step(app, s) for s in body.steps)
    saved = app.set_process(parse_id(project_id, "project"), steps=steps, actor=actor)
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.post("/{project_id}/runs", status_code=201, response_model=TaskOut)
async def run(
    project_id: str, app: App, tasks: Tasks, actor: CanRun, response: Response,
    body: Annotated[RunIn | None, Body()] = None,
) -> TaskOut:
    """Run the project's current process as a new task (422 for an unknown
    environment, before any task exists). Async with one hop, like queueing a script."""
    environment = body.environment if body is not None else None
    saved = await asyncio.to_thread(
        app.queue_run, parse_id(project_id, "project"), environment=environment, actor=actor
    )
    tasks.poke()
    return new_task(saved.aggregate, saved.position, response)
