"""What every Shoal aggregate shares: events that say who caused them."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from domain.actors import Actor


class ShoalAggregate(Aggregate):
    """An aggregate whose every event records its actor."""

    class Event(Aggregate.Event):
        actor: Actor

    class Created(Event, Aggregate.Created):
        pass

    class Deleted(Event):
        pass

    is_deleted: bool = False
