"""GET /api/health."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from adapters.http.deps import Container
from adapters.http.jsonbody import StrictJsonRoute

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)


class Health(BaseModel):
    """Liveness and how far the read models have got."""

    status: str
    position: int
    nats: str


@router.get("/api/health", response_model=Health)
async def health(container: Container) -> Health:
    """`ok` once the server has started and its read models are running."""
    connected = container.bus.is_connected
    status = "ok" if container.projector.last_error is None and connected else "degraded"
    return Health(
        status=status, position=container.projector.watch.position,
        nats="connected" if connected else "disconnected",
    )
