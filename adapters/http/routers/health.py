"""GET /api/health."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from adapters.http.deps import Container

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Liveness and how far the read models have got."""

    status: str
    position: int


@router.get("/api/health", response_model=Health)
def health(container: Container) -> Health:
    """`ok` once the server has started and its read models are running."""
    status = "ok" if container.runner.last_error is None else "degraded"
    return Health(status=status, position=container.runner.watch.position)
