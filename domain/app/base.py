"""The Application's shared machinery: loading, saving, names, retries."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError, Recording

from domain import codec
from domain.actors import Actor
from domain.app.commit import GroupCommitter
from domain.errors import Conflict, NotFound
from domain.names import NameIndex, index_id

A = TypeVar("A", bound=Aggregate)
P = ParamSpec("P")
R = TypeVar("R")

MAX_ATTEMPTS = 3


class Saved(NamedTuple, Generic[A]):
    """What a command returns: the aggregate as saved and the log position of its last
    event, so a caller can wait for read models to reach it."""

    aggregate: A
    position: int


def command(method: Callable[P, R]) -> Callable[P, R]:
    """Run a command again when a concurrent writer got there first.

    The whole method is re-run (it reloads what it needs), at most MAX_ATTEMPTS times.
    A name clash shows up on the retry as a Conflict naming the name.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return method(*args, **kwargs)
            except RecordConflictError:
                app = args[0] if args else None
                if isinstance(app, CommandsBase):
                    app.forget_cached()  # a cached copy may be what went stale
                if attempt == MAX_ATTEMPTS:
                    raise Conflict("changed concurrently by another request; try again") from None
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


class CommandsBase(Application[UUID]):
    """Base for the command mixins. One Application holds every aggregate, so the log is
    one ordered sequence (audit positions are global) and cross-aggregate saves are atomic."""

    name = "Shoal"
    env = {  # noqa: RUF012  (eventsourcing reads this class attribute)
        "TRANSCODER_TOPIC": codec.TOPIC,
        "AGGREGATE_CACHE_MAXSIZE": "2000",
    }

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._position_lock = threading.Lock()
        self._committer = GroupCommitter(self.events.put)
        self.last_position = 0
        self._saved_listeners: list[Callable[[int], None]] = []
        self._recorded_listeners: list[Callable[[list[tuple[int, Any]]], None]] = []

    # -- saving and being told about saves ------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, then close the store."""
        self._committer.close()
        super().close()

    def on_saved(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(position)`` after every save made through this Application."""
        self._saved_listeners.append(listener)

    def on_recorded(self, listener: Callable[[list[tuple[int, Any]]], None]) -> None:
        """Call ``listener([(position, event), ...])`` with the domain events of every
        save made through this Application, in the saving thread, once they are stored
        (e.g. to drop a cached copy of something that just changed)."""
        self._recorded_listeners.append(listener)

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        # Every write goes through one writer thread that groups concurrent saves into a
        # single transaction: one disk sync for many commands, and no SQLite writers
        # colliding and backing off in the busy handler. The repository fast-forwards
        # When the cache does not fast-forward (one process owns the store), it is
        # updated here, as the library's own _record does.
        recordings = self._committer.put(processing_event.events)
        if self.repository.cache and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self.repository.cache.put(aggregate_id, aggregate)
        return recordings

    def forget_cached(self) -> None:
        """Drop cached aggregates (after a conflict: someone else wrote)."""
        # The cache is an LRUCache because AGGREGATE_CACHE_MAXSIZE is always set.
        if isinstance(self.repository.cache, LRUCache):
            self.repository.cache.clear()

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if not recordings:
            return
        position = max(r.notification.id for r in recordings)
        with self._position_lock:
            self.last_position = max(self.last_position, position)
        # The events first: caches they make stale are dropped before anyone hears of
        # the position (and reads what it holds).
        if self._recorded_listeners:
            events = [(r.notification.id, r.domain_event) for r in recordings]
            for recorded in self._recorded_listeners:
                recorded(events)
        for listener in self._saved_listeners:
            listener(position)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Application.save, less its isinstance checks against the library's
        runtime-checkable Protocols (~16 us per aggregate, a save's largest Python cost
        after encoding) and its deprecated no-op notify(). Anything but aggregates goes
        the library's way."""
        if kwargs or not all(o is None or isinstance(o, Aggregate) for o in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            if aggregate is not None:
                processing_event.events.extend(aggregate.collect_events())
                processing_event.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _save(self, *aggregates: Aggregate | None) -> int:
        recordings = self.save(*aggregates)
        if not recordings:
            return self.last_position
        return recordings[-1].notification.id

    # -- loading ---------------------------------------------------------------------------

    def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, cls) or getattr(aggregate, "is_deleted", False):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    # -- unique names ----------------------------------------------------------------------

    def owner_of(self, kind: str, name: str) -> UUID | None:
        """The id of whatever of ``kind`` is called ``name`` now (case-insensitive)."""
        index = self._find(NameIndex, index_id(kind, name))
        return None if index is None else index.owner_id

    def _reserve_name(self, kind: str, name: str, owner_id: UUID, actor: Actor) -> NameIndex:
        index = self._find(NameIndex, index_id(kind, name))
        if index is None:
            return NameIndex(kind=kind, name=name, owner_id=owner_id, actor=actor)
        index.claim(name=name, owner_id=owner_id, actor=actor)
        return index

    def _release_name(self, kind: str, name: str, actor: Actor) -> NameIndex | None:
        index = self._find(NameIndex, index_id(kind, name))
        if index is not None:
            index.release(actor=actor)
        return index

    def _rename(
        self, kind: str, old: str, new: str, owner_id: UUID, actor: Actor
    ) -> list[NameIndex]:
        """Indexes to save for a rename. A change of case only keeps the same index."""
        if index_id(kind, old) == index_id(kind, new):
            return []
        reserved = self._reserve_name(kind, new, owner_id, actor)
        released = self._release_name(kind, old, actor)
        return [i for i in (reserved, released) if i is not None]

    def _names_of(self, aggregate_ids: frozenset[UUID]) -> str:
        """The quoted names of these aggregates, sorted, for an error message."""
        names = [getattr(self._find(Aggregate, i), "name", str(i)) for i in aggregate_ids]
        return ", ".join(repr(n) for n in sorted(names, key=str.casefold))

    def aggregate_state(self, aggregate_id: UUID) -> Any:
        """The current aggregate, whatever its type (for tests and tools)."""
        return self.repository.get(aggregate_id)
