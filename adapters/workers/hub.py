"""Everything the server does with external workers, wired once and started after the
bus: the signed gateway, agent users and work queues, the control subject, the heartbeat
monitor and the report intake."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from adapters.nats import subjects
from adapters.nats.access import AgentAccess, new_secret
from adapters.nats.bus import NatsBus
from adapters.workers.gateway import WorkerGateway
from adapters.workers.health import AgentHealthRunner, HealthChecker, HealthRunner, HealthTarget
from adapters.workers.heartbeats import HeartbeatMonitor
from adapters.workers.reports import ReportIntake
from adapters.workers.ssh import SshWorkers
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.errors import NotFound
from domain.messages import HealthAnswer
from domain.signing import public_key_text
from domain.tasks import Task
from domain.workers import CommsStyle, Worker
from projections.credentials import agent_credentials
from projections.sql import Database
from projections.watch import PositionWatch
from projections.workers import agent_workers

log = logging.getLogger("shoal.workers")

AGENT_STYLES = frozenset({CommsStyle.LISTENING, CommsStyle.POLLING})


@dataclass(frozen=True)
class AgentRegistration:
    """What a registering agent is told, once: how to reach NATS and as whom, and the
    key its instructions will be signed with."""

    worker_id: str
    nats_urls: list[str]
    nats_user: str
    nats_password: str
    inbox_prefix: str
    work_consumer: str
    server_key: str


class SshHealthRunner:
    """The policy's health script over SSH."""

    def __init__(self, ssh: SshWorkers) -> None:
        self.ssh = ssh

    async def __call__(self, target: HealthTarget, script: str, timeout_s: float) -> HealthAnswer:
        """Connect (host key pinned) and run ``script``."""
        return await self.ssh.health(target.worker_id, script, timeout_s)


class WorkerHub:
    """start(on_changed) / stop(); register and revoke agents."""

    def __init__(
        self, app: Shoal, views: Database, watch: PositionWatch, bus: NatsBus,
        access: AgentAccess | None, key: Ed25519PrivateKey, actor: Actor,
        agent_urls: Callable[[], list[str]], ssh: SshWorkers | None = None,
        log_limit_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.ssh = ssh
        self.views = views
        self.watch = watch
        self.bus = bus
        self.access = access
        self.key = key
        self.actor = actor
        self.agent_urls = agent_urls
        self.gateway = WorkerGateway(bus, key)
        self.on_changed: Callable[[UUID, Task | None], None] = lambda _task_id, _task: None
        # Steps this node gave each worker and that have not ended: routing counts them
        # before the read model does, so a burst cannot overfill a worker.
        self.load: dict[str, int] = {}
        self._load_lock = threading.Lock()
        # A worker's comms style never changes: asked once, not on every step. Dropped
        # when this node records the worker's deregistration.
        self._styles: dict[UUID, CommsStyle] = {}
        app.on_recorded(self._forget_styles)
        self.monitor = HeartbeatMonitor(app, views, bus, actor, self._changed)
        self.intake = ReportIntake(app, bus, self._changed, log_limit_bytes)
        agents = AgentHealthRunner(self.gateway)
        runners: dict[CommsStyle, HealthRunner] = {style: agents for style in AGENT_STYLES}
        if ssh is not None:
            runners[CommsStyle.SSH] = SshHealthRunner(ssh)
        self.health = HealthChecker(
            app, views, watch, runners, actor, self.revoke, is_alive=self.monitor.is_alive,
        )

    def count(self, worker_id: UUID, delta: int) -> None:
        """Note a step given to (+1) or ended on (-1) a worker by this node."""
        key = str(worker_id)
        with self._load_lock:  # routing runs in threads
            value = self.load.get(key, 0) + delta
            if value > 0:
                self.load[key] = value
            else:
                self.load.pop(key, None)

    def _changed(self, task_id: UUID, task: Task | None = None) -> None:
        self.on_changed(task_id, task)

    async def comms_style(self, worker_id: UUID) -> CommsStyle:
        """How the server reaches this worker (NotFound when it is not registered)."""
        style = self._styles.get(worker_id)
        if style is None:
            style = (await asyncio.to_thread(self.app.get_worker, worker_id)).comms_style
            self._styles[worker_id] = style
        return style

    def _forget_styles(self, recorded: list[tuple[int, Any]]) -> None:
        for _, event in recorded:
            if isinstance(event, Worker.Deregistered):
                self._styles.pop(event.originator_id, None)

    @property
    def server_key(self) -> str:
        """The public key agents pin."""
        return public_key_text(self.key)

    # -- lifecycle -------------------------------------------------------------------

    def write_users(self) -> None:
        """Before the embedded nats-server starts: its users, from the read model."""
        if self.access is not None:
            self.access.write(agent_credentials(self.views))

    async def start(self, on_changed: Callable[[UUID, Task | None], None]) -> None:
        """Work queues of every polling agent, the control subject, heartbeats, reports."""
        self.on_changed = on_changed
        for worker in await asyncio.to_thread(agent_workers, self.views):
            if worker["comms_style"] == CommsStyle.POLLING.value:
                await self._ensure_queue(worker["id"])
        await self.bus.subscribe(subjects.CONTROL_SUBJECTS, self._on_control)
        await self.monitor.start()
        await self.intake.start()
        await self.health.start()

    async def stop(self) -> None:
        """Stop health checks, the monitor, the intake and SSH connections (the bus is
        closed by the container)."""
        await self.health.stop()
        await self.intake.stop()
        await self.monitor.stop()
        if self.ssh is not None:
            await self.ssh.close()

    # -- agents ----------------------------------------------------------------------

    @property
    def issues_credentials(self) -> bool:
        """Only the embedded nats-server takes per-agent users from Shoal."""
        return self.access is not None

    def new_secret(self, comms_style: CommsStyle) -> tuple[str, str] | None:
        """(password, hash) for a new agent, None when this worker gets none."""
        if comms_style not in AGENT_STYLES or self.access is None:
            return None
        return new_secret()

    async def activate(
        self, worker_id: UUID, comms_style: CommsStyle, password: str | None
    ) -> AgentRegistration:
        """After a registration is stored and projected: let the agent in, make its work
        queue, and say how to connect."""
        wid = str(worker_id)
        await self._apply_users()
        if comms_style is CommsStyle.POLLING:
            await self._ensure_queue(wid)
        return AgentRegistration(
            worker_id=wid, nats_urls=self.agent_urls(),
            nats_user=subjects.agent_user(wid) if password else "", nats_password=password or "",
            inbox_prefix=subjects.inbox_prefix(wid), work_consumer=subjects.work_consumer(wid),
            server_key=self.server_key,
        )

    async def revoke(self, worker_id: UUID) -> None:
        """After a deregistration is projected: the agent's user goes (nats-server closes
        its connection), and so do its queue and anything still waiting in it."""
        wid = str(worker_id)
        await self._apply_users()
        await self.bus.delete_consumer(subjects.WORK_STREAM, subjects.work_consumer(wid))
        await self.bus.purge_subject(subjects.WORK_STREAM, subjects.work(wid))
        log.info("agent revoked", extra={"worker_id": wid})

    async def _apply_users(self) -> None:
        if self.access is not None:
            await self.access.apply(await asyncio.to_thread(agent_credentials, self.views))

    async def _ensure_queue(self, worker_id: str) -> None:
        await self.bus.ensure_pull_consumer(
            subjects.WORK_STREAM, subjects.work_consumer(worker_id), subjects.work(worker_id),
            # The agent acks an instruction as soon as it has checked it.
            ack_wait=30.0, max_ack_pending=1000,
        )

    async def _on_control(self, msg: Msg) -> None:
        sender = msg.subject.rsplit(".", 1)[-1]
        try:
            request = orjson.loads(msg.data)
            worker_id = UUID(sender)
        except (orjson.JSONDecodeError, ValueError):
            await msg.respond(orjson.dumps({"ok": False, "error": "not a control request"}))
            return
        if not isinstance(request, dict) or request.get("kind") != "deregister":
            await msg.respond(orjson.dumps({"ok": False, "error": "unknown control request"}))
            return
        try:
            name = (await asyncio.to_thread(self.app.get_worker, worker_id)).name
            actor = Actor(ActorKind.AGENT, sender, name)
            position = await asyncio.to_thread(self.app.deregister_worker, worker_id, actor=actor)
        except NotFound:
            await msg.respond(orjson.dumps({"ok": False, "error": "this worker is not registered"}))
            return
        # Answer before revoking: revoking closes the agent's connection.
        await msg.respond(orjson.dumps({"ok": True}))
        await self.bus.flush()
        await self.watch.wait_async(position, 5.0)
        await self.revoke(worker_id)
        log.info("worker deregistered by its agent", extra={"worker_id": sender, "name": name})
