"""Deployment targets: where a deployment goes. For now only the `cloud_region` kind,
which runs its steps on a worker (from its default pool, or the step's)."""

from __future__ import annotations

import unicodedata
from enum import Enum
from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.codec import register_enum
from domain.errors import Rejected
from domain.rules import name_key

MAX_ROLES = 50
MAX_ROLE_LENGTH = 100


@register_enum
class TargetKind(str, Enum):
    """What a target is."""

    CLOUD_REGION = "cloud_region"


class Keep(Enum):
    """Marks an optional setting an update leaves as it is (None means 'clear it')."""

    KEEP = "keep"


KEEP = Keep.KEEP


def clean_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    """One or more role names: outer spaces removed, none empty, none over
    MAX_ROLE_LENGTH, no control characters; repeats (in any case) dropped, order kept."""
    cleaned: list[str] = []
    seen: set[str] = set()
    for raw in roles:
        role = raw.strip()
        if not role:
            raise Rejected("a role name must not be empty")
        if len(role) > MAX_ROLE_LENGTH:
            raise Rejected(f"a role name must be at most {MAX_ROLE_LENGTH} characters")
        if any(unicodedata.category(ch).startswith("C") for ch in role):
            raise Rejected("a role name must not contain control characters")
        if name_key(role) not in seen:
            seen.add(name_key(role))
            cleaned.append(role)
    if not cleaned:
        raise Rejected("a target needs at least one role")
    if len(cleaned) > MAX_ROLES:
        raise Rejected(f"a target may have at most {MAX_ROLES} roles")
    return tuple(cleaned)


def check_environment_ids(environment_ids: tuple[UUID, ...]) -> tuple[UUID, ...]:
    """A target is in at least one environment, each named once; order is kept."""
    if not environment_ids:
        raise Rejected("a target must be in at least one environment")
    if len(set(environment_ids)) != len(environment_ids):
        raise Rejected("environment_ids names an environment more than once")
    return environment_ids


class DeploymentTarget(ShoalAggregate):
    """A deployment target."""

    class Created(ShoalAggregate.Created):
        name: str
        kind: TargetKind
        roles: tuple[str, ...]
        environment_ids: tuple[UUID, ...]
        default_worker_pool_id: UUID | None
        is_disabled: bool

    class Renamed(ShoalAggregate.Event):
        name: str

    class RolesChanged(ShoalAggregate.Event):
        roles: tuple[str, ...]

    class EnvironmentsChanged(ShoalAggregate.Event):
        environment_ids: tuple[UUID, ...]

    class DefaultPoolChanged(ShoalAggregate.Event):
        default_worker_pool_id: UUID | None

    class Disabled(ShoalAggregate.Event):
        pass

    class Enabled(ShoalAggregate.Event):
        pass

    class Deleted(ShoalAggregate.Deleted):
        pass

    @event(Created)
    def __init__(
        self,
        name: str,
        kind: TargetKind,
        roles: tuple[str, ...],
        environment_ids: tuple[UUID, ...],
        default_worker_pool_id: UUID | None,
        is_disabled: bool,
        actor: Actor,
    ) -> None:
        self.name = name
        self.kind = kind
        self.roles = roles
        self.environment_ids = environment_ids
        self.default_worker_pool_id = default_worker_pool_id
        self.is_disabled = is_disabled
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """A new name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def change_roles(self, roles: tuple[str, ...], actor: Actor) -> None:
        """Replace the roles (already cleaned by ``clean_roles``)."""
        if roles != self.roles:
            self._change_roles(roles=roles, actor=actor)

    @event(RolesChanged)
    def _change_roles(self, roles: tuple[str, ...], actor: Actor) -> None:
        self.roles = roles

    def change_environments(self, environment_ids: tuple[UUID, ...], actor: Actor) -> None:
        """Replace the environments (the caller updates each environment's target set)."""
        if environment_ids != self.environment_ids:
            self._change_environments(environment_ids=environment_ids, actor=actor)

    @event(EnvironmentsChanged)
    def _change_environments(self, environment_ids: tuple[UUID, ...], actor: Actor) -> None:
        self.environment_ids = environment_ids

    def change_default_pool(self, pool_id: UUID | None, actor: Actor) -> None:
        """Set or clear the worker pool the target's steps run on by default."""
        if pool_id != self.default_worker_pool_id:
            self._change_default_pool(default_worker_pool_id=pool_id, actor=actor)

    @event(DefaultPoolChanged)
    def _change_default_pool(self, default_worker_pool_id: UUID | None, actor: Actor) -> None:
        self.default_worker_pool_id = default_worker_pool_id

    def disable(self, actor: Actor) -> None:
        """Leave the target out of deployments."""
        if not self.is_disabled:
            self._disable(actor=actor)

    @event(Disabled)
    def _disable(self, actor: Actor) -> None:
        self.is_disabled = True

    def enable(self, actor: Actor) -> None:
        """Include the target in deployments again."""
        if self.is_disabled:
            self._enable(actor=actor)

    @event(Enabled)
    def _enable(self, actor: Actor) -> None:
        self.is_disabled = False

    def delete(self, actor: Actor) -> None:
        """Delete the target (the caller detaches it from environments and pool)."""
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: Actor) -> None:
        self.is_deleted = True
