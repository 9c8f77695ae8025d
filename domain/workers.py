"""Workers: machines (agents or SSH hosts) that run steps for the server."""

from __future__ import annotations

from enum import Enum
from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.codec import register_enum
from domain.errors import InvalidTransition, Rejected
from domain.ssh import SshSettings, check_ssh_settings

DEFAULT_CAPACITY = 4


@register_enum
class CommsStyle(str, Enum):
    """How the server reaches a worker."""

    LISTENING = "listening"
    POLLING = "polling"
    SSH = "ssh"


@register_enum
class HealthStatus(str, Enum):
    """The outcome of the last health check, or what the heartbeat monitor saw."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    HAS_WARNINGS = "has_warnings"
    UNHEALTHY = "unhealthy"
    UNAVAILABLE = "unavailable"


def check_pool_ids(pool_ids: tuple[UUID, ...]) -> tuple[UUID, ...]:
    """A worker is in at least one pool, each named once; order is kept."""
    if not pool_ids:
        raise Rejected("a worker must belong to at least one pool")
    if len(set(pool_ids)) != len(pool_ids):
        raise Rejected("pool_ids names a pool more than once")
    return pool_ids


class Worker(ShoalAggregate):
    """A registered worker."""

    class Registered(ShoalAggregate.Created):
        name: str
        pool_ids: tuple[UUID, ...]
        comms_style: CommsStyle
        endpoint: str | None
        machine_policy_id: UUID
        capacity: int

    class Renamed(ShoalAggregate.Event):
        name: str

    class PoolsChanged(ShoalAggregate.Event):
        pool_ids: tuple[UUID, ...]

    class Disabled(ShoalAggregate.Event):
        pass

    class Enabled(ShoalAggregate.Event):
        pass

    class CapacityChanged(ShoalAggregate.Event):
        capacity: int

    class PolicyChanged(ShoalAggregate.Event):
        machine_policy_id: UUID

    class HealthChecked(ShoalAggregate.Event):
        status: HealthStatus
        detail: str

    class WentOffline(ShoalAggregate.Event):
        detail: str

    class CameOnline(ShoalAggregate.Event):
        pass

    class CredentialsIssued(ShoalAggregate.Event):
        # A bcrypt hash of the agent's NATS password: the password itself is shown to
        # the registering agent once and never stored.
        secret_hash: str

    class SshConfigured(ShoalAggregate.Event):
        # The private key is sealed by the server (or named by a path): never in clear.
        host: str
        port: int
        username: str
        host_key_fingerprint: str
        private_key_sealed: str | None
        private_key_ref: str | None

    class Deregistered(ShoalAggregate.Deleted):
        pass

    @event(Registered)
    def __init__(
        self,
        name: str,
        pool_ids: tuple[UUID, ...],
        comms_style: CommsStyle,
        endpoint: str | None,
        machine_policy_id: UUID,
        capacity: int,
        actor: Actor,
    ) -> None:
        self.name = name
        self.pool_ids = pool_ids
        self.comms_style = comms_style
        self.endpoint = endpoint
        self.machine_policy_id = machine_policy_id
        self.capacity = capacity
        self.is_disabled = False
        self.health_status = HealthStatus.UNKNOWN
        self.health_detail = ""
        self.is_online = False
        self.is_deleted = False
        self.secret_hash: str | None = None
        self.ssh: SshSettings | None = None

    def _require_registered(self) -> None:
        if self.is_deleted:
            raise InvalidTransition(f"worker {self.name!r} was deregistered")

    def rename(self, name: str, actor: Actor) -> None:
        """New name (uniqueness is the caller's index check)."""
        self._require_registered()
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def change_pools(self, pool_ids: tuple[UUID, ...], actor: Actor) -> None:
        """Move the worker to these pools (membership on the pools is the caller's)."""
        self._require_registered()
        check_pool_ids(pool_ids)
        if pool_ids != self.pool_ids:
            self._change_pools(pool_ids=pool_ids, actor=actor)

    @event(PoolsChanged)
    def _change_pools(self, pool_ids: tuple[UUID, ...], actor: Actor) -> None:
        self.pool_ids = pool_ids

    def disable(self, actor: Actor) -> None:
        """Give the worker no new steps."""
        self._require_registered()
        if not self.is_disabled:
            self._disable(actor=actor)

    @event(Disabled)
    def _disable(self, actor: Actor) -> None:
        self.is_disabled = True

    def enable(self, actor: Actor) -> None:
        """Let the worker take steps again."""
        self._require_registered()
        if self.is_disabled:
            self._enable(actor=actor)

    @event(Enabled)
    def _enable(self, actor: Actor) -> None:
        self.is_disabled = False

    def change_capacity(self, capacity: int, actor: Actor) -> None:
        """How many steps the worker runs at once."""
        self._require_registered()
        if capacity != self.capacity:
            self._change_capacity(capacity=capacity, actor=actor)

    @event(CapacityChanged)
    def _change_capacity(self, capacity: int, actor: Actor) -> None:
        self.capacity = capacity

    def change_policy(self, machine_policy_id: UUID, actor: Actor) -> None:
        """Put the worker under another machine policy."""
        self._require_registered()
        if machine_policy_id != self.machine_policy_id:
            self._change_policy(machine_policy_id=machine_policy_id, actor=actor)

    @event(PolicyChanged)
    def _change_policy(self, machine_policy_id: UUID, actor: Actor) -> None:
        self.machine_policy_id = machine_policy_id

    def record_health(self, status: HealthStatus, detail: str, actor: Actor) -> None:
        """Record the result of a health check."""
        self._require_registered()
        self._record_health(status=status, detail=detail, actor=actor)

    @event(HealthChecked)
    def _record_health(self, status: HealthStatus, detail: str, actor: Actor) -> None:
        self.health_status = status
        self.health_detail = detail

    def went_offline(self, detail: str, actor: Actor) -> None:
        """Heartbeats stopped, or the agent did not answer; recorded on the transition
        only (a worker whose agent never came online becomes unavailable once)."""
        self._require_registered()
        if self.is_online or self.health_status is not HealthStatus.UNAVAILABLE:
            self._went_offline(detail=detail, actor=actor)

    @event(WentOffline)
    def _went_offline(self, detail: str, actor: Actor) -> None:
        self.is_online = False
        self.health_status = HealthStatus.UNAVAILABLE
        self.health_detail = detail

    def came_online(self, actor: Actor) -> None:
        """Heartbeats resumed; recorded on the transition only."""
        self._require_registered()
        if not self.is_online:
            self._came_online(actor=actor)

    @event(CameOnline)
    def _came_online(self, actor: Actor) -> None:
        self.is_online = True
        if self.health_status is HealthStatus.UNAVAILABLE:
            self.health_status = HealthStatus.UNKNOWN
            self.health_detail = ""

    def issue_credentials(self, secret_hash: str, actor: Actor) -> None:
        """Give the worker's agent (new) NATS credentials; earlier ones stop working."""
        self._require_registered()
        if self.comms_style is CommsStyle.SSH:
            raise InvalidTransition("an SSH worker has no agent to give credentials to")
        self._issue_credentials(secret_hash=secret_hash, actor=actor)

    @event(CredentialsIssued)
    def _issue_credentials(self, secret_hash: str, actor: Actor) -> None:
        self.secret_hash = secret_hash

    def configure_ssh(self, settings: SshSettings, actor: Actor) -> None:
        """How the server reaches this SSH worker; records nothing when nothing changes."""
        self._require_registered()
        if self.comms_style is not CommsStyle.SSH:
            raise Rejected(f"ssh settings are only for an ssh worker; this one is {self.comms_style.value}")
        settings = check_ssh_settings(settings)
        if settings != self.ssh:
            self._configure_ssh(
                host=settings.host, port=settings.port, username=settings.username,
                host_key_fingerprint=settings.host_key_fingerprint,
                private_key_sealed=settings.private_key_sealed,
                private_key_ref=settings.private_key_ref, actor=actor,
            )

    @event(SshConfigured)
    def _configure_ssh(
        self, host: str, port: int, username: str, host_key_fingerprint: str,
        private_key_sealed: str | None, private_key_ref: str | None, actor: Actor,
    ) -> None:
        self.ssh = SshSettings(
            host, port, username, host_key_fingerprint, private_key_sealed, private_key_ref
        )

    def deregister(self, actor: Actor) -> None:
        """Remove the worker for good."""
        self._require_registered()
        self._deregister(actor=actor)

    @event(Deregistered)
    def _deregister(self, actor: Actor) -> None:
        self.is_deleted = True
