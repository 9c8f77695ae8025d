"""/api/tasks: ad-hoc scripts, task state, logs (whole or followed), cancel, interventions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from enum import Enum
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from adapters.bootstrap import ServerContainer
from adapters.http.deps import App, Container, Tasks, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.logfollow import LOG_BATCH, follow_log
from adapters.http.schemas import (
    MAX_POSITION,
    Page,
    Skip,
    Take,
    not_found,
    parse_id,
    position_header,
)
from adapters.http.schemas import Request as Body
from adapters.http.steps import pool_ref
from domain.actors import Actor
from domain.app.base import Saved
from domain.keys import Permission
from domain.plan import StepState, TaskState
from domain.process import Syntax
from domain.tasks import Task, TaskKind
from projections.tasklogs import format_line, read_log
from projections.tasks import get_task, list_tasks

router = APIRouter(prefix="/api/tasks", tags=["tasks"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.TASK_VIEW))]
CanCreate = Annotated[Actor, Depends(require(Permission.TASK_CREATE))]


class RunStateOut(BaseModel):
    """Where a step, or one execution of it, is: who runs it and how it went."""

    state: StepState
    worker_id: str | None
    worker_name: str | None
    exit_code: int | None
    reason: str
    started: str | None
    finished: str | None


class ExecutionOut(RunStateOut):
    """One execution of a step on behalf of a deployment target."""

    target_id: str
    target_name: str


class TaskStepOut(RunStateOut):
    """A step's state within a task; a step run on behalf of roles lists one execution
    per target."""

    name: str
    action: str
    executions: list[ExecutionOut] = Field(default_factory=list)


class TaskOut(BaseModel):
    """A task."""

    id: str
    kind: TaskKind
    name: str
    project_id: str | None
    state: TaskState
    node: str | None
    created: str
    started: str | None
    finished: str | None
    queued_by: str
    environment_id: str | None = None
    environment: str | None = Field(None, description="The environment the run is into")
    steps: list[TaskStepOut]


class ScriptIn(Body):
    """An ad-hoc script."""

    worker_pool_id: StrictStr | None = Field(None, description="Pool id or name")
    syntax: Syntax
    script_body: StrictStr
    timeout_s: StrictInt | None = Field(None, gt=0)


class Decision(str, Enum):
    """What to do with a waiting manual intervention."""

    APPROVE = "approve"
    REJECT = "reject"


class InterventionIn(Body):
    """A decision on a manual intervention."""

    decision: Decision
    note: StrictStr = ""


def new_task(task: Task, position: int, response: Response) -> TaskOut:
    """A task just queued, from the aggregate as saved: nothing about it is in the read
    model that the aggregate does not say, so the answer need not wait for it."""
    response.headers.update(position_header(position))
    return TaskOut(
        id=str(task.id), kind=task.kind, name=task.name,
        project_id=str(task.project_id) if task.project_id else None,
        state=task.state, node=None, created=task.created_on.isoformat(), started=None,
        finished=None, queued_by=task.queued_by,
        environment_id=str(task.environment_id) if task.environment_id else None,
        environment=task.environment_name,
        steps=[
            TaskStepOut(name=s.name, action=s.action.value, state=StepState.PENDING,
                        worker_id=None, worker_name=None, exit_code=None, reason="",
                        started=None, finished=None)
            for s in task.steps
        ],
    )


def read_task(
    container: ServerContainer, task_id: UUID, position: int, response: Response
) -> TaskOut:
    """The task as the read model has it once it includes ``position``."""
    wait_for(container, position)
    response.headers.update(position_header(position))
    row = get_task(container.views, str(task_id))
    if row is None:
        raise not_found("task", str(task_id))
    return TaskOut(**row)


# The routes clients queue and poll tasks with are `async def` with one explicit hop to a
# thread for their store or read-model call: as plain `def` routes, FastAPI would hop to
# its thread pool for the route and again to validate the answer.


@router.get("", response_model=Page[TaskOut])
async def list_(
    views: Views, _: CanView, state: TaskState | None = None, project: str | None = None,
    skip: Skip = 0, take: Take = 100,
) -> Page[TaskOut]:
    """Tasks, newest first; filter by state and project id."""
    rows, total = await asyncio.to_thread(
        list_tasks, views, state=state.value if state else None, project_id=project,
        skip=skip, take=take,
    )
    return Page[TaskOut](items=[TaskOut(**r) for r in rows], total=total)


@router.post("/script", status_code=201, response_model=TaskOut)
async def script(
    body: ScriptIn, app: App, tasks: Tasks, actor: CanCreate, response: Response
) -> TaskOut:
    """Queue an ad-hoc script; it runs where the routing rule says."""

    def queue() -> Saved[Task]:
        return app.queue_script(
            syntax=body.syntax, script_body=body.script_body,
            worker_pool_id=pool_ref(app, body.worker_pool_id), timeout_s=body.timeout_s,
            actor=actor,
        )

    saved = await asyncio.to_thread(queue)
    tasks.poke()
    return new_task(saved.aggregate, saved.position, response)


@router.get("/{task_id}", response_model=TaskOut)
async def get(task_id: str, views: Views, _: CanView) -> TaskOut:
    """One task with its steps."""
    row = await asyncio.to_thread(get_task, views, str(parse_id(task_id, "task")))
    if row is None:
        raise not_found("task", task_id)
    return TaskOut(**row)


@router.post("/{task_id}/cancel", response_model=TaskOut)
def cancel(
    task_id: str, app: App, container: Container, tasks: Tasks, actor: CanCreate,
    response: Response,
) -> TaskOut:
    """Cancel a task; 409 once it has ended."""
    saved = app.cancel_task(parse_id(task_id, "task"), actor=actor)
    tasks.cancel(saved.aggregate.id)
    return read_task(container, saved.aggregate.id, saved.position, response)


@router.post("/{task_id}/interventions/{step}", response_model=TaskOut)
def decide(
    task_id: str, step: str, body: InterventionIn, app: App, container: Container, tasks: Tasks,
    actor: CanCreate, response: Response,
) -> TaskOut:
    """Approve or reject a manual intervention; 409 when that step is not waiting."""
    saved = app.decide_intervention(
        parse_id(task_id, "task"), step, approved=body.decision is Decision.APPROVE,
        note=body.note, actor=actor,
    )
    tasks.changed(saved.aggregate.id)
    return read_task(container, saved.aggregate.id, saved.position, response)


def _resume_after(last_event_id: str | None) -> tuple[int, int]:
    """(position, idx) of a follow's `Last-Event-ID` ("position.idx"); the log's start
    when there is none, or it is not one of ours."""
    position, _, idx = (last_event_id or "").strip().partition(".")
    if position.isdigit() and idx.isdigit() and len(position) <= 19 and len(idx) <= 9:
        return min(int(position), MAX_POSITION), int(idx)
    return (0, -1)


async def _text_log(container: ServerContainer, task_id: str) -> AsyncIterator[bytes]:
    """The whole log in batches, so a 50 MB log is never one string in memory."""
    after = (0, -1)
    while True:
        lines = await asyncio.to_thread(
            read_log, container.views, task_id, after=after, limit=LOG_BATCH
        )
        if not lines:
            return
        after = (lines[-1]["position"], lines[-1]["idx"])
        yield "".join(format_line(line) + "\n" for line in lines).encode()


@router.get(
    "/{task_id}/log",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
)
async def log(
    task_id: str, request: Request, container: Container, views: Views, _: CanView,
    follow: Annotated[bool, Query(description="stream (SSE) until the task ends")] = False,
    last_event_id: Annotated[str | None, Header(
        description="with follow: the id of the last line received, to resume after it")] = None,
) -> Response:
    """The task's log as text; with `follow=1`, Server-Sent Events (one line each, its
    `id:` the line's place in the log, then an `end` event with the task's state) until the
    task ends; a client that reconnects with `Last-Event-ID` gets the lines after that one.
    Like every read, 503 while the read models are behind this node's writes: a log cut
    short would pass for the whole."""
    tid = str(parse_id(task_id, "task"))
    watch = container.projector.watch
    task = await asyncio.to_thread(get_task, views, tid)
    if task is None:
        raise not_found("task", task_id)
    if not follow:
        return StreamingResponse(_text_log(container, tid), media_type="text/plain; charset=utf-8")

    async def lines(after: tuple[int, int], limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(read_log, container.views, tid, after=after, limit=limit)

    async def state() -> str | None:
        current = await asyncio.to_thread(get_task, container.views, tid)
        return None if current is None else str(current["state"])

    events = follow_log(_resume_after(last_event_id), lines, state, watch, request.is_disconnected)
    return StreamingResponse(
        events, media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
