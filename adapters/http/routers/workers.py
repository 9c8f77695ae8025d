"""/api/workers."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, model_validator

from adapters.http.deps import App, Container, Views, require, wait_for
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, Request, Skip, Take, not_found, parse_id, position_header
from adapters.nats.bus import BusError
from adapters.nats.embedded import EmbeddedNatsError
from adapters.secrets import SecretBox
from adapters.ssh.targets import seal_private_key
from adapters.workers.hub import AGENT_STYLES, AgentRegistration
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import NotFound, Rejected
from domain.keys import Permission
from domain.ssh import DEFAULT_SSH_PORT, SshSettings
from domain.workers import DEFAULT_CAPACITY, CommsStyle, HealthStatus
from projections.workers import get_worker, list_workers

router = APIRouter(prefix="/api/workers", tags=["workers"], route_class=StrictJsonRoute)

CanView = Annotated[Actor, Depends(require(Permission.WORKER_VIEW))]
CanConfigure = Annotated[Actor, Depends(require(Permission.CONFIGURE_SERVER))]
REDACTED = "[redacted]"
KEY_HELP = "The private key (PEM or OpenSSH, unencrypted); stored sealed, never shown again"
REF_HELP = "Instead of private_key: an absolute path of a key file on the server"


class SshOut(BaseModel):
    """How the server reaches an SSH worker; the private key itself is never shown."""

    host: str
    port: int
    username: str
    host_key_fingerprint: str
    private_key: str | None = Field(description=f'"{REDACTED}" when the server holds the key')
    private_key_ref: str | None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        # The read model says only whether there is a sealed key.
        if isinstance(data, dict) and "has_private_key" in data:
            data = dict(data)
            data["private_key"] = REDACTED if data.pop("has_private_key") else None
        return data

class WorkerOut(BaseModel):
    """A worker as the API shows it."""

    id: str
    name: str
    pool_ids: list[str]
    comms_style: CommsStyle
    endpoint: str | None
    is_disabled: bool
    health_status: HealthStatus
    health_detail: str
    last_seen: str | None
    machine_policy_id: str
    capacity: int
    running_steps: int
    registered: str
    is_online: bool = Field(description="An agent: heard from recently. SSH: always true")
    ssh: SshOut | None = Field(None, description="An SSH worker's connection settings")


class SshSettingsIn(Request):
    """How the server reaches an SSH worker: exactly one of private_key, private_key_ref."""

    host: StrictStr
    port: StrictInt = DEFAULT_SSH_PORT
    username: StrictStr
    host_key_fingerprint: StrictStr = Field(description="SHA256:<43 base64 characters>")
    private_key: StrictStr | None = Field(None, description=KEY_HELP, repr=False)
    private_key_ref: StrictStr | None = Field(None, description=REF_HELP)


class SshSettingsPatch(Request):
    """SSH settings to change; a new private_key or private_key_ref replaces the key."""

    host: StrictStr | None = None
    port: StrictInt | None = None
    username: StrictStr | None = None
    host_key_fingerprint: StrictStr | None = None
    private_key: StrictStr | None = Field(None, description=KEY_HELP, repr=False)
    private_key_ref: StrictStr | None = Field(None, description=REF_HELP)


class WorkerCreate(Request):
    """Register a worker record."""

    name: StrictStr
    pool_ids: list[StrictStr] = Field(min_length=1, description="Pool ids or names")
    comms_style: CommsStyle
    endpoint: StrictStr | None = None
    machine_policy_id: StrictStr | None = Field(None, description="Policy id or name")
    capacity: StrictInt = DEFAULT_CAPACITY
    ssh: SshSettingsIn | None = Field(None, description="Required for (only) comms_style ssh")


class WorkerPatch(Request):
    """Fields to change; absent fields stay as they are."""

    name: StrictStr | None = None
    pool_ids: list[StrictStr] | None = Field(None, min_length=1)
    is_disabled: StrictBool | None = None
    capacity: StrictInt | None = None
    machine_policy_id: StrictStr | None = None
    ssh: SshSettingsPatch | None = Field(None, description="An SSH worker's settings to change")


def _ssh_settings(secrets: SecretBox, body: SshSettingsIn | None) -> SshSettings | None:
    """The settings as the domain keeps them: a given key is checked and sealed here,
    so its text never reaches an event."""
    if body is None:
        return None
    if (body.private_key is None) == (body.private_key_ref is None):
        raise Rejected("ssh needs exactly one of private_key and private_key_ref")
    return SshSettings(
        host=body.host, port=body.port, username=body.username,
        host_key_fingerprint=body.host_key_fingerprint,
        private_key_sealed=(
            seal_private_key(secrets, body.private_key) if body.private_key is not None else None
        ),
        private_key_ref=body.private_key_ref,
    )


def _ssh_changes(secrets: SecretBox, body: SshSettingsPatch | None) -> dict[str, Any] | None:
    if body is None:
        return None
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "private_key" in changes and "private_key_ref" in changes:
        raise Rejected("ssh needs exactly one of private_key and private_key_ref")
    if "private_key" in changes:
        changes["private_key_sealed"] = seal_private_key(secrets, changes.pop("private_key"))
    return changes


def _pool_ids(app: Shoal, refs: list[str]) -> tuple[UUID, ...]:
    ids = []
    for ref in refs:
        try:
            ids.append(app.resolve_pool(ref).id)
        except NotFound:
            raise Rejected(f"worker pool {ref!r} does not exist") from None
    return tuple(ids)


def _policy_id(app: Shoal, ref: str | None) -> UUID | None:
    if ref is None:
        return None
    try:
        return app.resolve_policy(ref).id
    except NotFound:
        raise Rejected(f"machine policy {ref!r} does not exist") from None


def _read(views: Any, worker_id: str, heard: dict[str, str] | None = None) -> WorkerOut:
    row = get_worker(views, worker_id)
    if row is None:
        raise not_found("worker", worker_id)
    return _out(row, heard or {})


def _out(row: dict[str, Any], heard: dict[str, str]) -> WorkerOut:
    # Heartbeats are not events, so the read model's last_seen only moves on transitions;
    # this node's monitor knows the latest.
    latest = heard.get(row["id"])
    if latest is not None and (row["last_seen"] is None or latest > row["last_seen"]):
        row = {**row, "last_seen": latest}
    return WorkerOut(**row)


@router.get("", response_model=Page[WorkerOut])
def list_(
    app: App,
    views: Views,
    container: Container,
    _: CanView,
    pool: str | None = None,
    health: HealthStatus | None = None,
    comms_style: CommsStyle | None = None,
    name: str | None = None,
    skip: Skip = 0,
    take: Take = 100,
) -> Page[WorkerOut]:
    """Workers by name, filtered by pool (id or name), health, comms style, name part."""
    pool_id = str(app.resolve_pool(pool).id) if pool is not None else None
    rows, total = list_workers(
        views,
        pool=pool_id,
        health=health.value if health else None,
        comms_style=comms_style.value if comms_style else None,
        name=name,
        skip=skip,
        take=take,
    )
    heard = container.hub.monitor.heard_at()
    return Page[WorkerOut](items=[_out(r, heard) for r in rows], total=total)


class WorkerRegistered(WorkerOut):
    """A new worker; agents (listening, polling) also get their registration."""

    registration: AgentRegistration | None = Field(
        None, description="How the agent reaches NATS, shown once: keep it secret"
    )


def _register_sync(app: Shoal, container: Any, body: WorkerCreate, actor: Actor) -> tuple[Any, str | None]:
    secret = container.hub.new_secret(body.comms_style)
    saved = app.register_worker(
        name=body.name,
        pool_ids=_pool_ids(app, body.pool_ids),
        comms_style=body.comms_style,
        endpoint=body.endpoint,
        machine_policy_id=_policy_id(app, body.machine_policy_id),
        capacity=body.capacity,
        secret_hash=secret[1] if secret else None,
        ssh=_ssh_settings(container.secrets, body.ssh),
        actor=actor,
    )
    wait_for(container, saved.position)
    return saved, (secret[0] if secret else None)


@router.post("", status_code=201, response_model=WorkerRegistered)
async def register(
    body: WorkerCreate, app: App, container: Container, actor: CanConfigure, response: Response
) -> WorkerRegistered:
    """Register a worker in one or more pools; 409 when the name is taken, 422 when a
    pool or the policy does not exist. An agent's answer holds its NATS credentials,
    which work by the time the answer arrives."""
    saved, password = await asyncio.to_thread(_register_sync, app, container, body, actor)
    worker = saved.aggregate
    registration = None
    if body.comms_style in AGENT_STYLES:
        try:
            registration = await container.hub.activate(worker.id, body.comms_style, password)
        except (BusError, EmbeddedNatsError):
            # The agent could not be let in: take the registration back, so trying again
            # later is a plain retry (the name is free), then answer 503.
            await asyncio.to_thread(app.deregister_worker, worker.id, actor=actor)
            raise
    response.headers.update(position_header(saved.position))
    out = await asyncio.to_thread(_read, container.views, str(worker.id))
    return WorkerRegistered(**out.model_dump(), registration=registration)


@router.get("/{worker_id}", response_model=WorkerOut)
def get(worker_id: str, views: Views, container: Container, _: CanView) -> WorkerOut:
    """One worker."""
    return _read(views, str(parse_id(worker_id, "worker")), container.hub.monitor.heard_at())


@router.patch("/{worker_id}", response_model=WorkerOut)
def patch(
    worker_id: str, body: WorkerPatch, app: App, container: Container, actor: CanConfigure,
    response: Response,
) -> WorkerOut:
    """Change a worker's name, pools, enabled flag, capacity, policy or SSH settings."""
    saved = app.update_worker(
        parse_id(worker_id, "worker"),
        name=body.name,
        pool_ids=_pool_ids(app, body.pool_ids) if body.pool_ids is not None else None,
        is_disabled=body.is_disabled,
        capacity=body.capacity,
        machine_policy_id=_policy_id(app, body.machine_policy_id),
        ssh=_ssh_changes(container.secrets, body.ssh),
        actor=actor,
    )
    wait_for(container, saved.position)
    response.headers.update(position_header(saved.position))
    return _read(container.views, str(saved.aggregate.id))


@router.delete("/{worker_id}", status_code=204)
async def delete(worker_id: str, app: App, container: Container, actor: CanConfigure) -> Response:
    """Deregister a worker: it leaves its pools, its name is free again, and its agent's
    credentials stop working (a running agent is disconnected and exits)."""
    wid = parse_id(worker_id, "worker")
    position = await asyncio.to_thread(app.deregister_worker, wid, actor=actor)
    await asyncio.to_thread(wait_for, container, position)
    await container.hub.revoke(wid)
    return Response(status_code=204, headers=position_header(position))


class HealthCheckOut(BaseModel):
    """The outcome of a health check run on demand."""

    worker_id: str
    status: HealthStatus
    detail: str
    checked_at: str
    recorded: bool = Field(
        description="False when the worker did not answer and its machine policy says it may be "
        "offline: then its health stays as it was"
    )


@router.post("/{worker_id}/health-check", response_model=HealthCheckOut)
async def health_check(
    worker_id: str, container: Container, actor: CanConfigure, response: Response
) -> HealthCheckOut:
    """Run the worker's machine-policy health script now and answer with its outcome
    (healthy, has_warnings, unhealthy; unavailable when the agent does not answer),
    recorded as the worker's health. CONTRACT.md says this creates a task; we answer with
    the check's result directly instead (a check is short and has no log worth keeping
    beyond its detail). Agents run the script themselves, SSH workers over their
    connection. 404 for an unknown worker."""
    result = await container.hub.health.check_now(parse_id(worker_id, "worker"), actor)
    if result.position is not None:
        await asyncio.to_thread(wait_for, container, result.position)
        response.headers.update(position_header(result.position))
    return HealthCheckOut(
        worker_id=str(result.worker_id), status=result.status, detail=result.detail,
        checked_at=result.checked_at.isoformat(), recorded=result.recorded,
    )
