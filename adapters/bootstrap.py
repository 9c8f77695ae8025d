"""The composition root: the only place where concrete parts are put together."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.dispatch.builtin import BuiltInWorkerConfig, BuiltInWorkerProcess
from adapters.dispatch.dispatcher import Dispatcher
from adapters.dispatch.taskrun import RunContext
from adapters.nats import subjects as nats_subjects
from adapters.nats.access import AgentAccess
from adapters.nats.bus import NatsBus
from adapters.nats.embedded import EmbeddedNats, EmbeddedNatsConfig
from adapters.nats.objects import ObjectFiles, ensure_buckets
from adapters.nats.subjects import SERVER_USER
from adapters.projector_process import ProjectorConfig, ProjectorProcess
from adapters.secrets import SecretBox
from adapters.settings import Settings
from adapters.store import open_application, open_views
from adapters.workers.hub import WorkerHub
from adapters.workers.ssh import SshWorkers
from agent.executor import StepExecutor
from agent.home import Registration, load_registration
from agent.packages import PackageCache
from agent.ports import StepRunner
from agent.service import AgentConfig, AgentService, AgentSubjects
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.signing import load_private_key, new_private_key_pem
from projections.sql import Database

log = logging.getLogger("shoal.server")


@dataclass(frozen=True)
class ServerContainer:
    """What a running server is made of."""

    settings: Settings
    app: Shoal
    views: Database
    projector: ProjectorProcess  # keeps ``views`` up to date, in a process of its own
    executor: StepRunner  # runs the built-in worker's steps
    builtin: BuiltInWorkerProcess | None  # the process behind ``executor``, unless overridden
    bus: NatsBus
    nats: EmbeddedNats | None
    access: AgentAccess | None
    hub: WorkerHub
    secrets: SecretBox

    async def start_transport(self) -> str:
        """Start the embedded nats-server (unless an external one is configured) with the
        agents' users, connect the bus and make sure the JetStream streams exist. Returns
        the NATS URL. Call after start(): the users come from the read model."""
        user = password = None
        if self.nats is not None and self.access is not None:
            self.hub.write_users()
            await self.nats.start()
            self.nats.supervise()
            url = self.nats.url
            user, password = SERVER_USER, self.access.server_password
        else:
            url = self.settings.nats_url or ""
        await self.bus.start(
            url, name=f"shoal-server-{self.settings.node_name}", user=user, password=password
        )
        await self.bus.ensure_streams()
        await ensure_buckets(self.bus)
        return url

    async def stop_transport(self) -> None:
        """Drain and close the bus, then stop the embedded nats-server."""
        await self.hub.stop()
        await self.bus.stop()
        if self.nats is not None:
            await self.nats.stop()

    def dispatcher(self) -> Dispatcher:
        """The task dispatcher; made inside the running event loop (see the lifespan)."""
        node = self.settings.node_name
        ctx = RunContext(
            hub=self.hub,
            app=self.app,
            views=self.views,
            watch=self.projector.watch,
            executor=self.executor,
            actor=self.actor,
            work_root=self.settings.work_root,
            wait_limit_s=self.settings.worker_wait_limit_s,
            log_limit_bytes=self.settings.step_log_limit_bytes,
            artifacts=self.objects(nats_subjects.ARTIFACTS_BUCKET),
        )
        # With SQLite this node is the store's only writer (the data folder is locked).
        return Dispatcher(ctx, node=node, task_cap=self.settings.task_cap,
                          sole_writer=self.settings.database_url is None)

    def objects(self, bucket: str) -> ObjectFiles:
        """One object store bucket (``subjects.PACKAGES_BUCKET`` / ``ARTIFACTS_BUCKET``)."""
        return ObjectFiles(self.bus, bucket)

    @property
    def actor(self) -> Actor:
        """Who this node is in the events it records on its own."""
        node = self.settings.node_name
        return Actor(ActorKind.SYSTEM, f"node:{node}", f"Shoal server ({node})")

    def start(self) -> str | None:
        """Install on first start and have every save wake the projector. Returns the
        administrator key when this start created it. Then call start_projections()."""
        admin_key = self.app.install()
        if admin_key is not None:
            write_admin_key(self.settings.admin_key_file, admin_key)
        self.app.on_saved(self.projector.wake)
        return admin_key

    async def start_projections(self) -> None:
        """Start the projector process; returns once the read models have caught up with
        the log (ProjectorError when it cannot start)."""
        await self.projector.start()

    async def stop_projections(self) -> None:
        """End the projector process (after the last events this node saves)."""
        await self.projector.stop()

    def stop(self) -> None:
        """Close every connection (after stop_projections)."""
        self.views.close()
        self.app.close()


def write_admin_key(path: Path, key: str) -> None:
    """Write the key readable by its owner only; it is created with 0600, never widened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)


def build_server(settings: Settings, **overrides: Any) -> ServerContainer:
    """Real parts by default; tests pass replacements by keyword (``app``, ``views``,
    ``bus``, ``executor``, ``secrets``, ``projector_config``)."""
    app = overrides.get("app") or open_application(settings.data_dir, settings.database_url)
    views = overrides.get("views") or open_views(settings.data_dir, settings.database_url)
    # Only the projector process writes the read models; this process reads them.
    projector = ProjectorProcess(overrides.get("projector_config") or ProjectorConfig(
        settings.data_dir, settings.database_url
    ))
    bus = overrides.get("bus") or NatsBus()
    # Packages are cached in the data folder, read from the object store: by the server
    # for SSH workers, by the built-in worker process (which asks the server to fetch).
    package_store = ObjectFiles(bus, nats_subjects.PACKAGES_BUCKET)
    packages = PackageCache(settings.data_dir / "packages", package_store)
    executor: StepRunner | None = overrides.get("executor")
    builtin = None
    if executor is None:
        builtin = BuiltInWorkerProcess(BuiltInWorkerConfig(
            work_root=settings.work_root, packages_root=packages.root,
            inbox=settings.data_dir / "artifacts-inbox",
        ), package_store)
        executor = builtin
    nats = access = None
    if settings.nats_url is None:
        host, port = "127.0.0.1", 0
        if settings.nats_listen:
            listen_host, _, listen_port = settings.nats_listen.rpartition(":")
            host, port = listen_host.strip("[]"), int(listen_port)
        nats = EmbeddedNats(EmbeddedNatsConfig(settings.data_dir, listen_host=host, port=port))
        access = AgentAccess(nats)
    node = settings.node_name
    secrets = overrides.get("secrets") or SecretBox.from_file(settings.secrets_key_file)
    hub = WorkerHub(
        app, views, projector.watch, bus, access, load_signing_key(settings.signing_key_file),
        Actor(ActorKind.SYSTEM, f"node:{node}", f"Shoal server ({node})"),
        agent_urls=lambda: agent_urls(settings, nats),
        ssh=SshWorkers(app, secrets, packages), log_limit_bytes=settings.step_log_limit_bytes,
    )
    return ServerContainer(
        settings, app, views, projector, executor, builtin, bus, nats, access, hub, secrets
    )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The server's signing key, made (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new_private_key_pem())
    return load_private_key(path.read_bytes())


def agent_urls(settings: Settings, nats: EmbeddedNats | None) -> list[str]:
    """The NATS URLs agents are told to use: the embedded server's (reachable from other
    machines only with --nats-listen), or the external ones without credentials."""
    if nats is not None:
        return [nats.url]
    urls = (settings.nats_url or "").split(",")
    return [u.split("@", 1)[1] if "@" in u else u for u in (x.strip() for x in urls) if u]


# -- the agent (`shoal agent run`) ---------------------------------------------------------


@dataclass(frozen=True)
class AgentContainer:
    """What a running agent is made of."""

    home: Path
    registration: Registration
    bus: NatsBus
    executor: StepExecutor
    service: AgentService


def agent_subjects(worker_id: str) -> AgentSubjects:
    """The NATS subjects of one agent, from the one place that names them."""
    return AgentSubjects(
        exec=nats_subjects.agent_exec(worker_id),
        cancel=nats_subjects.agent_cancel(worker_id),
        health=nats_subjects.agent_health(worker_id),
        reports=nats_subjects.reports(worker_id),
        heartbeat=nats_subjects.heartbeat(worker_id),
        work_stream=nats_subjects.WORK_STREAM,
        work_consumer=nats_subjects.work_consumer(worker_id),
    )


def build_agent(home: Path, **overrides: Any) -> AgentContainer:
    """The agent serving the registration in ``home`` (HomeError when there is none).
    Overrides by keyword: ``registration``, ``bus``, ``executor``, ``config``
    (an AgentConfig; its default puts step folders in ``<home>/work``)."""
    registration = overrides.get("registration") or load_registration(home)
    bus = overrides.get("bus") or NatsBus()
    # Packages are fetched over NATS (read-only on the packages stream) and cached by hash.
    executor = overrides.get("executor") or StepExecutor(packages=PackageCache(
        home / "packages", ObjectFiles(bus, nats_subjects.PACKAGES_BUCKET)
    ))
    config = overrides.get("config") or AgentConfig(work_root=home / "work")
    service = AgentService(registration, bus, executor, config, agent_subjects(registration.worker_id))
    return AgentContainer(home, registration, bus, executor, service)
