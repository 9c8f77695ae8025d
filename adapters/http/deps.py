"""Dependencies: the container, authentication, permissions, fresh reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from adapters.bootstrap import ServerContainer
from adapters.dispatch.dispatcher import Dispatcher
from adapters.http.keyring import KeyRing
from adapters.http.schemas import RETRY_SOON
from domain.actors import Actor
from domain.app import Shoal
from domain.keys import Permission, grants
from projections.sql import Database

_api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")


# Dependencies are `async def` and one level deep: FastAPI runs a plain `def` dependency
# in its thread pool (a thread hop per dependency per request), and every nested
# dependency is another round of its dependency solving. They read the running server's
# parts straight from app.state (set by the lifespan).


def _container(request: Request) -> ServerContainer:
    container: ServerContainer = request.app.state.container
    return container


async def get_container(request: Request) -> ServerContainer:
    """The running server's parts."""
    return _container(request)


Container = Annotated[ServerContainer, Depends(get_container)]


async def get_app(request: Request) -> Shoal:
    """The Application (write side)."""
    return _container(request).app


async def fresh_views(request: Request) -> Database:
    """The read models, once they include every write this node has made: a client
    that just changed something reads its own change."""
    container = _container(request)
    target = container.app.last_position
    watch = container.projector.watch
    if watch.position < target and not await watch.wait_async(
        target, container.settings.read_wait_s
    ):
        raise HTTPException(503, "read models are behind the event log; try again shortly",
                            headers=RETRY_SOON)
    return container.views


App = Annotated[Shoal, Depends(get_app)]
Views = Annotated[Database, Depends(fresh_views)]


def require(permission: Permission) -> Callable[..., Awaitable[Actor]]:
    """A dependency that lets the request through only with a live API key (in
    X-Api-Key or as a bearer token; 401 without) that grants ``permission`` (403
    without), and gives the route the actor to record on its events."""

    async def check(
        request: Request,
        api_key: Annotated[str | None, Depends(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Actor:
        presented = api_key or (bearer.credentials if bearer is not None else None)
        if not presented:
            raise HTTPException(
                401, "missing API key: send it in the X-Api-Key header",
                headers={"WWW-Authenticate": "Bearer"},
            )
        keyring: KeyRing = request.app.state.keyring
        key = await keyring.authenticate(presented)
        if key is None:
            raise HTTPException(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if not grants(key.permissions, permission):
            raise HTTPException(403, f"this API key lacks the {permission.value} permission")
        return key.actor

    check.__name__ = f"require_{permission.value}"
    return check


def wait_for(container: ServerContainer, position: int) -> None:
    """Block until the read models include ``position`` (after a command)."""
    if not container.projector.watch.wait(position, container.settings.read_wait_s):
        raise HTTPException(
            503, f"the change was recorded at position {position} but read models are behind",
            headers=RETRY_SOON,
        )


async def get_dispatcher(request: Request) -> Dispatcher:
    """This node's task dispatcher."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


Tasks = Annotated[Dispatcher, Depends(get_dispatcher)]
