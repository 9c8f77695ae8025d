"""API keys: hashed at rest, shown once, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import Enum
from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor, ActorKind
from domain.base import ShoalAggregate
from domain.codec import register_enum
from domain.errors import Rejected
from domain.rules import clean_name

KEY_PREFIX = "shoal"


@register_enum
class Permission(str, Enum):
    """What a key may do. Administer implies every other permission."""

    ADMINISTER = "Administer"
    CONFIGURE_SERVER = "ConfigureServer"
    WORKER_VIEW = "WorkerView"
    PROJECT_VIEW = "ProjectView"
    PROJECT_EDIT = "ProjectEdit"
    TASK_VIEW = "TaskView"
    TASK_CREATE = "TaskCreate"
    ENVIRONMENT_VIEW = "EnvironmentView"
    ENVIRONMENT_EDIT = "EnvironmentEdit"
    TARGET_VIEW = "TargetView"
    TARGET_EDIT = "TargetEdit"
    PACKAGE_PUSH = "PackagePush"
    PACKAGE_VIEW = "PackageView"


def grants(held: frozenset[Permission], needed: Permission) -> bool:
    """Whether a key holding ``held`` may do what needs ``needed``."""
    return Permission.ADMINISTER in held or needed in held


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret part. Keys carry 256 random bits, so a slow password hash
    would add latency to every request without adding safety."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def key_text(key_id: UUID, secret: str) -> str:
    """The text a client presents: the key id (to find the record) and the secret."""
    return f"{KEY_PREFIX}_{key_id.hex}_{secret}"


def parse_key_text(text: str) -> tuple[UUID, str] | None:
    """Split a presented key into (key id, secret); None when it is not shaped like one."""
    parts = text.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 32 or not parts[2]:
        return None
    try:
        return UUID(hex=parts[1]), parts[2]
    except ValueError:
        return None


class ApiKey(ShoalAggregate):
    """An API key. Only the hash of its secret is ever stored."""

    class Created(ShoalAggregate.Created):
        name: str
        secret_hash: str
        permissions: tuple[Permission, ...]

    class Revoked(ShoalAggregate.Event):
        pass

    @event(Created)
    def __init__(
        self, name: str, secret_hash: str, permissions: tuple[Permission, ...], actor: Actor
    ) -> None:
        self.name = name
        self.secret_hash = secret_hash
        self.permissions = permissions
        self.is_revoked = False
        self.is_deleted = False

    @property
    def actor(self) -> Actor:
        """The actor this key's requests are recorded as."""
        return Actor(ActorKind.API_KEY, str(self.id), self.name)

    def matches(self, secret: str) -> bool:
        """Constant-time check of a presented secret; a revoked key matches nothing."""
        return hmac.compare_digest(self.secret_hash, hash_secret(secret)) and not self.is_revoked

    def revoke(self, actor: Actor) -> None:
        """Stop the key working, for good."""
        if not self.is_revoked:
            self._revoke(actor=actor)

    @event(Revoked)
    def _revoke(self, actor: Actor) -> None:
        self.is_revoked = True


def check_key_request(name: str, permissions: tuple[Permission, ...]) -> tuple[str, tuple[Permission, ...]]:
    """A key needs a name and at least one permission; duplicates are dropped."""
    name = clean_name(name, "key name")
    if not permissions:
        raise Rejected("a key needs at least one permission")
    return name, tuple(dict.fromkeys(permissions))
