"""/api/events: the audit log, paged and live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from adapters.http.deps import Container, Views, require
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import MAX_POSITION
from domain.actors import Actor
from domain.keys import Permission
from projections.audit import AuditPage, read_events
from projections.watch import PositionWatch

router = APIRouter(prefix="/api/events", tags=["audit"], route_class=StrictJsonRoute)

CanAdminister = Annotated[Actor, Depends(require(Permission.ADMINISTER))]

STREAM_BATCH = 500
KEEPALIVE_S = 15.0


class EventOut(BaseModel):
    """One event of the log."""

    position: int
    type: str
    aggregate_id: str
    aggregate_version: int
    timestamp: str
    actor: dict[str, Any] | None
    data: dict[str, Any]


class EventPage(BaseModel):
    """Events in log order; `next` is the `after` for the following page (null at the end)."""

    items: list[EventOut]
    next: int | None


@router.get("", response_model=EventPage)
def list_(
    views: Views,
    _: CanAdminister,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: str | None = None,
) -> EventPage:
    """The audit log after position `after`, optionally of one event type
    (e.g. `WorkerPool.Created`)."""
    page = read_events(views, after=after, limit=limit, type=type)
    return EventPage(items=[EventOut(**i) for i in page.items], next=page.next)


def _resume_from(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is not None and last_event_id.strip().isdigit():
        return min(int(last_event_id), MAX_POSITION)
    return after or 0


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream(
    request: Request,
    container: Container,
    _: CanAdminister,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every event from `Last-Event-ID` (or `after`) on, then live ones as they happen.
    Each message's `id:` is the event's position, so a reconnecting client resumes with
    no gap and no duplicate."""
    start = _resume_from(last_event_id, after)

    async def page_after(sent: int) -> AuditPage:
        return await asyncio.to_thread(read_events, container.views, after=sent, limit=STREAM_BATCH)

    messages = audit_stream(start, page_after, container.projector.watch, request.is_disconnected)
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def audit_stream(
    start: int,
    page_after: Callable[[int], Awaitable[AuditPage]],
    watch: PositionWatch,
    disconnected: Callable[[], Awaitable[bool]],
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """The stream's body: the audited events after ``start`` (``page_after(position)``),
    then each as the read models (``watch``) pass it."""
    sent = start
    yield b"retry: 1000\n\n"
    while not await disconnected():
        # The read below includes everything the read models held before it; once it is
        # caught up, wait for them to pass that, not just the last event sent: log lines
        # are not audited, and while a step logs, the position after the last audited
        # event is passed already, so waiting for it would read again at once, for ever.
        shown = watch.position
        page = await page_after(sent)
        for item in page.items:
            sent = item["position"]
            yield b"id: %d\ndata: %s\n\n" % (sent, orjson.dumps(item))
        if page.next is not None:
            continue
        # Caught up: sleep until the read models move on, or send a comment now and then
        # so proxies keep the connection open.
        if not await watch.wait_async(max(sent, shown) + 1, keepalive_s):
            yield b": keep-alive\n\n"
