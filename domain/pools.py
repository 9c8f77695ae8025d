"""Worker pools: named groups of workers that steps point at."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.errors import Conflict


class WorkerPool(ShoalAggregate):
    """A pool. It keeps its member ids so that 'delete only when empty' is decided
    atomically with the registrations that would fill it."""

    class Created(ShoalAggregate.Created):
        name: str
        description: str
        sort_order: int

    class Renamed(ShoalAggregate.Event):
        name: str

    class DetailsChanged(ShoalAggregate.Event):
        description: str
        sort_order: int

    class MadeDefault(ShoalAggregate.Event):
        pass

    class DefaultCleared(ShoalAggregate.Event):
        pass

    class MemberAdded(ShoalAggregate.Event):
        worker_id: UUID

    class MemberRemoved(ShoalAggregate.Event):
        worker_id: UUID

    class TargetAttached(ShoalAggregate.Event):
        target_id: UUID

    class TargetDetached(ShoalAggregate.Event):
        target_id: UUID

    class Deleted(ShoalAggregate.Deleted):
        pass

    @event(Created)
    def __init__(self, name: str, description: str, sort_order: int, actor: Actor) -> None:
        self.name = name
        self.description = description
        self.sort_order = sort_order
        self.is_default = False
        self.member_ids: frozenset[UUID] = frozenset()
        self.target_ids: frozenset[UUID] = frozenset()
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """Give the pool a new name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def change_details(self, description: str, sort_order: int, actor: Actor) -> None:
        """Change what the pool says about itself and where it sorts."""
        if (description, sort_order) != (self.description, self.sort_order):
            self._change_details(description=description, sort_order=sort_order, actor=actor)

    @event(DetailsChanged)
    def _change_details(self, description: str, sort_order: int, actor: Actor) -> None:
        self.description = description
        self.sort_order = sort_order

    def make_default(self, actor: Actor) -> None:
        """Mark this pool as the default; the old default must be cleared in the same save."""
        if not self.is_default:
            self._make_default(actor=actor)

    @event(MadeDefault)
    def _make_default(self, actor: Actor) -> None:
        self.is_default = True

    def clear_default(self, actor: Actor) -> None:
        """Stop being the default (only as part of moving the flag to another pool)."""
        if self.is_default:
            self._clear_default(actor=actor)

    @event(DefaultCleared)
    def _clear_default(self, actor: Actor) -> None:
        self.is_default = False

    def add_member(self, worker_id: UUID, actor: Actor) -> None:
        """Record that a worker joined."""
        if worker_id not in self.member_ids:
            self._add_member(worker_id=worker_id, actor=actor)

    @event(MemberAdded)
    def _add_member(self, worker_id: UUID, actor: Actor) -> None:
        self.member_ids = self.member_ids | {worker_id}

    def remove_member(self, worker_id: UUID, actor: Actor) -> None:
        """Record that a worker left."""
        if worker_id in self.member_ids:
            self._remove_member(worker_id=worker_id, actor=actor)

    @event(MemberRemoved)
    def _remove_member(self, worker_id: UUID, actor: Actor) -> None:
        self.member_ids = self.member_ids - {worker_id}

    def attach_target(self, target_id: UUID, actor: Actor) -> None:
        """Record that a deployment target runs its steps here by default."""
        if target_id not in self.target_ids:
            self._attach_target(target_id=target_id, actor=actor)

    @event(TargetAttached)
    def _attach_target(self, target_id: UUID, actor: Actor) -> None:
        self.target_ids = self.target_ids | {target_id}

    def detach_target(self, target_id: UUID, actor: Actor) -> None:
        """Record that a target no longer has this pool as its default."""
        if target_id in self.target_ids:
            self._detach_target(target_id=target_id, actor=actor)

    @event(TargetDetached)
    def _detach_target(self, target_id: UUID, actor: Actor) -> None:
        self.target_ids = self.target_ids - {target_id}

    def delete(self, actor: Actor) -> None:
        """Delete the pool: never the default one, never one that still has workers or
        is some target's default pool."""
        if self.is_default:
            raise Conflict(
                f"pool {self.name!r} is the default pool; make another pool the default first"
            )
        if self.member_ids:
            raise Conflict(
                f"pool {self.name!r} still has {len(self.member_ids)} worker(s); "
                "move or delete them first"
            )
        if self.target_ids:
            raise Conflict(
                f"pool {self.name!r} is the default pool of {len(self.target_ids)} "
                "deployment target(s); change their default pool first"
            )
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: Actor) -> None:
        self.is_deleted = True
