"""Dependencies: the container, authentication, permissions, fresh reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from adapters.bootstrap import ServerContainer
from adapters.dispatch.dispatcher import Dispatcher
from domain.actors import Actor
from domain.app import Shoal
from domain.keys import ApiKey, Permission, grants
from projections.sql import Database

_api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")


# Dependencies that do not block are `async def`: FastAPI runs a plain `def` dependency
# in its thread pool, which costs a thread hop per dependency per request.


async def get_container(request: Request) -> ServerContainer:
    """The running server's parts (set on app.state by the lifespan)."""
    container: ServerContainer = request.app.state.container
    return container


Container = Annotated[ServerContainer, Depends(get_container)]


async def get_app(container: Container) -> Shoal:
    """The Application (write side)."""
    return container.app


async def fresh_views(container: Container) -> Database:
    """The read models, once they include every write this node has made: a client
    that just changed something reads its own change."""
    target = container.app.last_position
    watch = container.runner.watch
    if watch.position < target and not await watch.wait_async(
        target, container.settings.read_wait_s
    ):
        raise HTTPException(503, "read models are behind the event log; try again shortly")
    return container.views


App = Annotated[Shoal, Depends(get_app)]
Views = Annotated[Database, Depends(fresh_views)]


def authenticate(
    app: App,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The key presented in X-Api-Key or as a bearer token; 401 when absent or wrong."""
    presented = api_key or (bearer.credentials if bearer is not None else None)
    if not presented:
        raise HTTPException(
            401, "missing API key: send it in the X-Api-Key header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = app.authenticate(presented)
    if key is None:
        raise HTTPException(
            401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


def require(permission: Permission) -> Callable[..., Awaitable[Actor]]:
    """A dependency that lets the request through only with ``permission``, and gives
    the route the actor to record on its events."""

    async def check(key: Annotated[ApiKey, Depends(authenticate)]) -> Actor:
        if not grants(frozenset(key.permissions), permission):
            raise HTTPException(403, f"this API key lacks the {permission.value} permission")
        return key.actor

    check.__name__ = f"require_{permission.value}"
    return check


def wait_for(container: ServerContainer, position: int) -> None:
    """Block until the read models include ``position`` (after a command)."""
    if not container.runner.watch.wait(position, container.settings.read_wait_s):
        raise HTTPException(
            503, f"the change was recorded at position {position} but read models are behind"
        )


async def get_dispatcher(request: Request) -> Dispatcher:
    """This node's task dispatcher."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


Tasks = Annotated[Dispatcher, Depends(get_dispatcher)]
