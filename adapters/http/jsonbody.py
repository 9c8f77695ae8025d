"""Request bodies are parsed by orjson rather than the standard library's json.

The standard library accepts what no store can keep: a string holding a lone surrogate
("\\ud800" escaped in the JSON), which no encoder writes back out as UTF-8, and NaN and
Infinity, which JSON does not have. Taken in, the first failed only when the event was
saved, as a 500. orjson refuses all three while parsing, and FastAPI answers its
JSONDecodeError (a subclass of the standard one) as it does any malformed body: 422,
"JSON decode error". It is quicker too.

Every router is made with ``route_class=StrictJsonRoute`` (FastAPI's documented way to
give a route its own Request class).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJsonRequest(Request):
    """A Request whose ``json()`` is orjson's."""

    async def json(self) -> Any:
        """The body as JSON; orjson.JSONDecodeError when it is not strict JSON."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose endpoint reads its body through StrictJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The usual handler, handed a StrictJsonRequest."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
