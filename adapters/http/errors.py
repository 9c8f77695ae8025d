"""One table from domain errors to HTTP answers; every error body is {"detail": "..."}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.http.schemas import RETRY_SOON
from adapters.nats.bus import BusError
from adapters.nats.embedded import EmbeddedNatsError
from domain.errors import Conflict, InvalidTransition, NotFound, Rejected, ShoalError

log = logging.getLogger("shoal.http")

STATUS: dict[type[ShoalError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidTransition: 409,
    Rejected: 422,
}


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "pool_ids", 0) -> "pool_ids[0]"; the "body"/"query" prefix says where.
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] == "body" else loc:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    return "".join(parts).lstrip(".") or "body"


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """One line naming each bad field and what is wrong with it."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return "request body is not valid JSON"
    return "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ShoalError)
    async def _domain(request: Request, exc: ShoalError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=STATUS.get(type(exc), 400))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": describe_validation(errors)}, status_code=422)
        return JSONResponse(
            {
                "detail": describe_validation(errors),
                "errors": [
                    {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
                    for e in errors
                ],
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(BusError)
    @app.exception_handler(EmbeddedNatsError)
    async def _transport(request: Request, exc: Exception) -> JSONResponse:
        # The write is stored; what failed is telling NATS (users, queues): say so, and
        # that trying again is safe, rather than answer 500.
        log.warning("message bus unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"the message bus is not available right now ({exc}); try again shortly"},
            status_code=503, headers=RETRY_SOON,
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
