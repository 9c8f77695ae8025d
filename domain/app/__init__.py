"""The Shoal Application: every command, one method each, over one event log."""

from __future__ import annotations

from eventsourcing.persistence import RecordConflictError

from domain.actors import SYSTEM, Actor
from domain.app.base import CommandsBase, Saved, command
from domain.app.configuration import ConfigurationCommands
from domain.app.keys import KeyCommands
from domain.app.packages import PackageCommands
from domain.app.policies import POLICY
from domain.app.pools import POOL
from domain.app.targets import TargetCommands
from domain.app.tasks import TaskCommands
from domain.app.workers import WorkerCommands
from domain.errors import Conflict
from domain.installation import INSTALLATION_ID, Installation
from domain.keys import Permission
from domain.policies import DEFAULT_POLICY_NAME, PolicySettings
from domain.pools import WorkerPool

DEFAULT_POOL_NAME = "Default Worker Pool"
ADMIN_KEY_NAME = "Administrator (created at install)"

__all__ = ["Saved", "Shoal", "command"]


class Shoal(
    WorkerCommands,
    TaskCommands,
    TargetCommands,
    ConfigurationCommands,
    KeyCommands,
    PackageCommands,
    CommandsBase,
):
    """The one Application. Command methods live in per-concept mixins."""

    def is_installed(self) -> bool:
        """Whether the first-start set-up has happened in this event store."""
        return self._find(Installation, INSTALLATION_ID) is not None

    def install(self, actor: Actor = SYSTEM) -> str | None:
        """First start: the default pool, the default policy and an administrator key, in
        one save. Returns the key text, or None when this store was already set up
        (by an earlier start or by another node that won the race)."""
        if self.is_installed():
            return None
        pool = WorkerPool(name=DEFAULT_POOL_NAME, description="", sort_order=0, actor=actor)
        pool.make_default(actor)
        policy = self._new_policy(
            DEFAULT_POLICY_NAME,
            PolicySettings(description="Applied to workers that name no other policy."),
            actor,
        )
        key, text = self._new_key(ADMIN_KEY_NAME, (Permission.ADMINISTER,), actor)
        installation = Installation(
            default_pool_id=pool.id,
            default_policy_id=policy.id,
            admin_key_id=key.id,
            actor=actor,
        )
        try:
            # Another node may install between is_installed() above and here: then its
            # default names are already taken (Conflict) or its save lands first
            # (RecordConflictError). Either way its defaults and key stand.
            indexes = [
                self._reserve_name(POOL, pool.name, pool.id, actor),
                self._reserve_name(POLICY, policy.name, policy.id, actor),
            ]
            self._save(installation, pool, policy, key, *indexes)
        except (RecordConflictError, Conflict):
            if self.is_installed():
                return None
            raise
        return text
