"""The installation: the one-time set-up of a server, and where the default pool is."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate

INSTALLATION_ID = uuid5(NAMESPACE_URL, "https://shoal.dev/installation")


class Installation(ShoalAggregate):
    """A singleton. Two nodes starting at once both try to create it; the store lets one
    win, so the defaults and the administrator key are made exactly once."""

    class Installed(ShoalAggregate.Created):
        default_pool_id: UUID
        default_policy_id: UUID
        admin_key_id: UUID

    class DefaultPoolMoved(ShoalAggregate.Event):
        pool_id: UUID

    @staticmethod
    def create_id(
        default_pool_id: UUID, default_policy_id: UUID, admin_key_id: UUID, actor: Actor
    ) -> UUID:
        """Always the same id: there is one installation per event store."""
        return INSTALLATION_ID

    @event(Installed)
    def __init__(
        self, default_pool_id: UUID, default_policy_id: UUID, admin_key_id: UUID, actor: Actor
    ) -> None:
        self.default_pool_id = default_pool_id
        self.default_policy_id = default_policy_id
        self.admin_key_id = admin_key_id

    def move_default_pool(self, pool_id: UUID, actor: Actor) -> None:
        """Point the default at another pool; saved with both pools, so it is atomic."""
        if pool_id != self.default_pool_id:
            self._move_default_pool(pool_id=pool_id, actor=actor)

    @event(DefaultPoolMoved)
    def _move_default_pool(self, pool_id: UUID, actor: Actor) -> None:
        self.default_pool_id = pool_id
