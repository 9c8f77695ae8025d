"""Environments: named stages (Test, Production) that deployment targets belong to."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.errors import Conflict


class Environment(ShoalAggregate):
    """An environment. It keeps the ids of the targets in it, so that 'delete only when
    unused' is decided atomically with the target changes that would use it."""

    class Created(ShoalAggregate.Created):
        name: str
        description: str

    class Renamed(ShoalAggregate.Event):
        name: str

    class Described(ShoalAggregate.Event):
        description: str

    class TargetAttached(ShoalAggregate.Event):
        target_id: UUID

    class TargetDetached(ShoalAggregate.Event):
        target_id: UUID

    class Deleted(ShoalAggregate.Deleted):
        pass

    @event(Created)
    def __init__(self, name: str, description: str, actor: Actor) -> None:
        self.name = name
        self.description = description
        self.target_ids: frozenset[UUID] = frozenset()
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """Give the environment a new name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def describe(self, description: str, actor: Actor) -> None:
        """Change what the environment says about itself."""
        if description != self.description:
            self._describe(description=description, actor=actor)

    @event(Described)
    def _describe(self, description: str, actor: Actor) -> None:
        self.description = description

    def attach_target(self, target_id: UUID, actor: Actor) -> None:
        """Record that a target is in this environment."""
        if target_id not in self.target_ids:
            self._attach_target(target_id=target_id, actor=actor)

    @event(TargetAttached)
    def _attach_target(self, target_id: UUID, actor: Actor) -> None:
        self.target_ids = self.target_ids | {target_id}

    def detach_target(self, target_id: UUID, actor: Actor) -> None:
        """Record that a target left this environment."""
        if target_id in self.target_ids:
            self._detach_target(target_id=target_id, actor=actor)

    @event(TargetDetached)
    def _detach_target(self, target_id: UUID, actor: Actor) -> None:
        self.target_ids = self.target_ids - {target_id}

    def delete(self, actor: Actor) -> None:
        """Delete the environment, never while a target is in it."""
        if self.target_ids:
            raise Conflict(
                f"environment {self.name!r} is used by {len(self.target_ids)} target(s); "
                "remove it from them first"
            )
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: Actor) -> None:
        self.is_deleted = True
