"""What every Shoal aggregate shares: events that say who caused them, and a cheap copy."""

from __future__ import annotations

from typing import Any

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

    def __deepcopy__(self, memo: dict[int, Any]) -> ShoalAggregate:
        """The repository hands out a copy of each cached aggregate, so a command that
        fails half-way cannot corrupt the cache. By convention aggregate state holds only
        immutable values (str, numbers, UUIDs, enums, tuples, frozensets, frozen
        dataclasses) and plain dict/list/set containers, so copying just the containers
        is a full copy, at a fraction of what copy.deepcopy costs (it was the largest CPU
        cost of running a step)."""
        new = object.__new__(type(self))
        new.__dict__.update({k: _copy_state(v) for k, v in self.__dict__.items()})
        return new


def _copy_state(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _copy_state(v) for k, v in value.items()}
    if kind is list:
        return [_copy_state(v) for v in value]
    if kind is set:
        return {_copy_state(v) for v in value}
    return value
