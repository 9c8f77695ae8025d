"""/api/tasks/{id}/artifacts: the files a task's steps returned with shoal-artifact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from adapters.http.deps import Container, Views, require
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, not_found, parse_id
from adapters.nats import subjects
from adapters.nats.objects import ObjectFiles, ObjectMissing, artifact_object
from domain.actors import Actor
from domain.keys import Permission
from projections.artifacts import list_artifacts
from projections.tasks import get_task

router = APIRouter(prefix="/api/tasks", tags=["artifacts"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.TASK_VIEW))]


class ArtifactOut(BaseModel):
    """One artifact of a task."""

    step: str
    name: str
    size: int
    sha256: str
    stored: str


def _artifacts(views: Views, task_id: str) -> list[dict[str, object]]:
    tid = str(parse_id(task_id, "task"))
    if get_task(views, tid) is None:
        raise not_found("task", task_id)
    return list_artifacts(views, tid)


@router.get("/{task_id}/artifacts", response_model=Page[ArtifactOut])
def list_(task_id: str, views: Views, _: CanView) -> Page[ArtifactOut]:
    """The task's artifacts, in the order they were returned."""
    rows = _artifacts(views, task_id)
    return Page[ArtifactOut](items=[ArtifactOut(**r) for r in rows], total=len(rows))  # type: ignore[arg-type]


@router.get("/{task_id}/artifacts/{name}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(
    task_id: str, name: str, views: Views, container: Container, _: CanView,
    step: Annotated[str | None, Query(description="The step, when several returned this name")] = None,
) -> StreamingResponse:
    """One artifact's bytes. 404 for an unknown task or artifact; 409 when several steps
    returned this name and `step` does not say which."""
    rows = await asyncio.to_thread(_artifacts, views, task_id)
    found = [r for r in rows if r["name"] == name and (step is None or r["step"] == step)]
    if not found:
        raise not_found("artifact", name)
    if len(found) > 1:
        steps = ", ".join(repr(r["step"]) for r in found)
        raise HTTPException(409, f"artifact {name!r} was returned by steps {steps}; say which with ?step=")
    row = found[0]
    store = container.objects(subjects.ARTIFACTS_BUCKET)
    object_name = artifact_object(str(parse_id(task_id, "task")), str(row["step"]), name)
    try:
        await store.info(object_name)
    except ObjectMissing:
        raise not_found("artifact", name) from None
    return StreamingResponse(
        _chunks(store, object_name), media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "Content-Length": str(row["size"]),
            "X-Shoal-SHA256": str(row["sha256"]),
        },
    )


async def _chunks(store: ObjectFiles, object_name: str) -> AsyncIterator[bytes]:
    async for chunk in store.read(object_name):
        yield chunk
