"""A start that fails for a reason the operator can fix is told in one line.

Starlette reports any failure of the lifespan's start to the server with the whole
traceback, which uvicorn logs as the message. For the failures named here (a projector
that cannot start, an embedded nats-server that does not come up, NATS or the store out of
reach, a file or folder of the data folder that cannot be made or read) the cause is all
the operator needs; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.nats.bus import BusError
from adapters.nats.embedded import EmbeddedNatsError
from adapters.projector_process import ProjectorError
from adapters.store import StoreUnavailable

EXPECTED = (ProjectorError, EmbeddedNatsError, BusError, StoreUnavailable, OSError)


def remember(state: object, failure: BaseException) -> None:
    """Called by the lifespan before it re-raises ``failure``."""
    if isinstance(failure, OSError) and failure.strerror and failure.filename:
        state.start_failure = f"{failure.strerror}: {failure.filename}"  # type: ignore[attr-defined]
    elif isinstance(failure, EXPECTED):
        state.start_failure = str(failure)  # type: ignore[attr-defined]


class StartFailureMessage:
    """ASGI middleware: swaps the traceback of a ``lifespan.startup.failed`` message for
    the remembered one-line cause, when there is one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def told(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                cause = getattr(scope["app"].state, "start_failure", None)
                if cause:
                    message = {**message, "message": f"cannot start: {cause}"}
            await send(message)

        await self.app(scope, receive, told)
