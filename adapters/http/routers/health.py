"""GET /api/health."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from pydantic import BaseModel

from adapters.http.deps import Container
from adapters.http.jsonbody import StrictJsonRoute
from projections.skipped import skipped_count

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)

log = logging.getLogger("shoal.http")


class Health(BaseModel):
    """Liveness and how far the read models have got. `skipped_events`: events the read
    models set aside because they could not apply them (the server log names each;
    `shoal replay` applies them once the cause is fixed); null when it could not be
    read."""

    status: str
    position: int
    nats: str
    skipped_events: int | None


@router.get("/api/health", response_model=Health)
async def health(container: Container) -> Health:
    """`ok` once the server has started, its read models are running and complete, and
    NATS is connected; else `degraded`."""
    connected = container.bus.is_connected
    try:
        skipped: int | None = await asyncio.to_thread(skipped_count, container.views)
    except Exception as exc:  # the read models' database is away: say so, don't fail
        log.warning("could not count skipped events", extra={"reason": str(exc)})
        skipped = None
    ok = container.projector.last_error is None and connected and skipped == 0
    return Health(
        status="ok" if ok else "degraded", position=container.projector.watch.position,
        nats="connected" if connected else "disconnected", skipped_events=skipped,
    )
