"""/api/configuration: the built-in worker and the mail server."""

from __future__ import annotations

import pwd
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from adapters.http.deps import App, require
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Request, position_header
from domain.actors import Actor
from domain.configuration import Smtp, check_run_as_user
from domain.errors import Rejected
from domain.keys import Permission

router = APIRouter(prefix="/api/configuration", tags=["configuration"], route_class=StrictJsonRoute)

CanAdminister = Annotated[Actor, Depends(require(Permission.ADMINISTER))]


class BuiltInWorkerOut(BaseModel):
    """The built-in worker's settings."""

    enabled: bool
    run_as_user: str | None


class BuiltInWorkerPatch(Request):
    """Turn it on or off; choose the OS user steps run as (null: the server's own)."""

    enabled: StrictBool | None = None
    run_as_user: StrictStr | None = Field(None, description="OS user; empty string clears it")


class SmtpOut(BaseModel):
    """The mail server email steps use. The password is never shown."""

    configured: bool
    host: str | None = None
    port: int | None = None
    sender: str | None = None
    username: str | None = None
    has_password: bool = False
    starttls: bool = False


class SmtpIn(Request):
    """Mail server settings (send `{"host": null}` to clear them)."""

    host: StrictStr | None
    port: StrictInt = 25
    sender: StrictStr = "shoal@localhost"
    username: StrictStr | None = None
    password: StrictStr | None = None
    starttls: StrictBool = False


@router.get("/built-in-worker", response_model=BuiltInWorkerOut)
def get_built_in(app: App, _: CanAdminister) -> BuiltInWorkerOut:
    """Whether the built-in worker runs steps, and as whom."""
    config = app.configuration()
    return BuiltInWorkerOut(enabled=config.built_in_enabled, run_as_user=config.run_as_user)


@router.patch("/built-in-worker", response_model=BuiltInWorkerOut)
def patch_built_in(
    body: BuiltInWorkerPatch, app: App, actor: CanAdminister, response: Response
) -> BuiltInWorkerOut:
    """Change the built-in worker's settings; 422 when the user does not exist here."""
    if body.run_as_user:
        # The name rule first: the lookup itself fails on some malformed names (a NUL).
        check_run_as_user(body.run_as_user)
        try:
            pwd.getpwnam(body.run_as_user)
        except KeyError:
            raise Rejected(
                f"there is no OS user {body.run_as_user!r} on this server; create it first"
            ) from None
    saved = app.configure_built_in_worker(
        enabled=body.enabled, run_as_user=body.run_as_user or None,
        clear_run_as_user=body.run_as_user == "", actor=actor,
    )
    response.headers.update(position_header(saved.position))
    config = saved.aggregate
    return BuiltInWorkerOut(enabled=config.built_in_enabled, run_as_user=config.run_as_user)


def _smtp_out(smtp: Smtp | None) -> SmtpOut:
    if smtp is None:
        return SmtpOut(configured=False)
    return SmtpOut(
        configured=True, host=smtp.host, port=smtp.port, sender=smtp.sender,
        username=smtp.username, has_password=bool(smtp.password), starttls=smtp.starttls,
    )


@router.get("/smtp", response_model=SmtpOut)
def get_smtp(app: App, _: CanAdminister) -> SmtpOut:
    """The mail server settings."""
    return _smtp_out(app.configuration().smtp)


@router.put("/smtp", response_model=SmtpOut)
def put_smtp(body: SmtpIn, app: App, actor: CanAdminister, response: Response) -> SmtpOut:
    """Set (or, with a null host, clear) the mail server."""
    smtp = None if body.host is None else Smtp(
        host=body.host, port=body.port, sender=body.sender, username=body.username,
        password=body.password, starttls=body.starttls,
    )
    saved = app.configure_smtp(smtp=smtp, actor=actor)
    response.headers.update(position_header(saved.position))
    return _smtp_out(saved.aggregate.smtp)
