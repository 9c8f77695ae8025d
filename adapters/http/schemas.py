"""Shapes shared by several routers."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar
from uuid import UUID

from fastapi import HTTPException, Query
from pydantic import BaseModel, ConfigDict

from domain.errors import NotFound

T = TypeVar("T")

MAX_TAKE = 1000


class Page(BaseModel, Generic[T]):
    """A page of a list and how many items the whole list has."""

    items: list[T]
    total: int


class Request(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


MAX_SKIP = 2**31 - 1
MAX_POSITION = 2**62  # positions are 64-bit in both stores
# On a 503 that passes by itself (read models catching up, the bus reconnecting): when a
# client may ask again.
RETRY_SOON = {"Retry-After": "1"}
Skip = Annotated[int, Query(ge=0, le=MAX_SKIP, description="How many items to skip")]
Take = Annotated[int, Query(ge=1, le=MAX_TAKE, description="How many items to return")]


def parse_id(value: str, what: str) -> UUID:
    """A path id; anything that is not a UUID is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


def position_header(position: int) -> dict[str, str]:
    """Where a command's events landed in the log, so a client can wait on it."""
    return {"X-Shoal-Position": str(position)}


def not_found(what: str, value: str) -> HTTPException:
    """404 with the usual wording."""
    return HTTPException(404, f"{what} {value!r} not found")
