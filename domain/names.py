"""Unique names, enforced by the event store.

A name is reserved by an index aggregate whose id is uuid5(kind, name). Two racing
creates of one name both try to write version 1 of the same aggregate, so the store
refuses the second; no check-then-act window exists in Python.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.errors import Conflict
from domain.rules import name_key

_NAMESPACE = uuid5(NAMESPACE_URL, "https://shoal.dev/names")


class NameIndex(ShoalAggregate):
    """Who owns one name of one kind (pool, worker, policy)."""

    class Created(ShoalAggregate.Created):
        kind: str
        name: str
        owner_id: UUID

    class Released(ShoalAggregate.Event):
        pass

    class Claimed(ShoalAggregate.Event):
        name: str
        owner_id: UUID

    @staticmethod
    def create_id(kind: str, name: str, owner_id: UUID, actor: Actor) -> UUID:
        """The index id for a name: equal for names that differ only in case."""
        return index_id(kind, name)

    @event(Created)
    def __init__(self, kind: str, name: str, owner_id: UUID, actor: Actor) -> None:
        self.kind = kind
        self.name = name
        self.owner_id: UUID | None = owner_id

    def release(self, actor: Actor) -> None:
        """Free the name, e.g. after a rename or a delete."""
        if self.owner_id is not None:
            self._release(actor=actor)

    @event(Released)
    def _release(self, actor: Actor) -> None:
        self.owner_id = None

    def claim(self, name: str, owner_id: UUID, actor: Actor) -> None:
        """Take a released name for a new owner."""
        if self.owner_id is not None and self.owner_id != owner_id:
            raise Conflict(f"a {self.kind} named {name!r} already exists")
        if self.owner_id != owner_id:
            self._claim(name=name, owner_id=owner_id, actor=actor)

    @event(Claimed)
    def _claim(self, name: str, owner_id: UUID, actor: Actor) -> None:
        self.name = name
        self.owner_id = owner_id


def index_id(kind: str, name: str) -> UUID:
    """uuid5 of the kind and the case-folded name."""
    return uuid5(_NAMESPACE, f"{kind}/{name_key(name)}")
