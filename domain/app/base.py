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
from domain.app.cache import NewestCache
from domain.app.commit import GroupCommitter
from domain.errors import Conflict, NotFound
from domain.names import NameIndex, index_id

A = TypeVar("A", bound=Aggregate)
P = ParamSpec("P")
R = TypeVar("R")

MAX_ATTEMPTS = 3


class _Contention:
    """Makes commands that collide take turns within this process.

    Commands that all write one aggregate (thirty agents registering into one pool at
    once) otherwise keep beating each other, and some run out of attempts: 9 of 30 such
    registrations answered 409. After a first attempt loses, the command retries holding
    ``turn``; while any command waits for or holds it, new commands go straight to the
    queue too, so the retries are not beaten again by a stream of fresh attempts. When
    nothing collides, no command waits for anything. Re-entrant: a command may call one."""

    def __init__(self) -> None:
        self.turn = threading.RLock()
        self._count_lock = threading.Lock()
        self.queued = 0  # commands waiting for or holding ``turn``

    def __enter__(self) -> None:
        with self._count_lock:
            self.queued += 1
        self.turn.acquire()

    def __exit__(self, *_: object) -> None:
        self.turn.release()
        with self._count_lock:
            self.queued -= 1


_CONTENTION = _Contention()


class Saved(NamedTuple, Generic[A]):
    """What a command returns: the aggregate as saved and the log position of its last
    event, so a caller can wait for read models to reach it."""

    aggregate: A
    position: int


def command(method: Callable[P, R]) -> Callable[P, R]:
    """Run a command again when a concurrent writer got there first.

    The whole method is re-run (it reloads what it needs), at most MAX_ATTEMPTS times,
    each re-run in turn with the other colliding commands of this process (_Contention),
    so only a writer in another process can beat it again.
    A name clash shows up on the retry as a Conflict naming the name.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        attempts = MAX_ATTEMPTS
        if not _CONTENTION.queued:
            try:
                return method(*args, **kwargs)
            except RecordConflictError:
                attempts -= 1
        with _CONTENTION:
            for _ in range(attempts):
                try:
                    return method(*args, **kwargs)
                except RecordConflictError:
                    pass
        raise Conflict("changed concurrently by another request; try again")

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
        # The cache is an LRUCache because AGGREGATE_CACHE_MAXSIZE is always set.
        assert isinstance(self.repository.cache, LRUCache)
        self._cache = NewestCache(self.repository.cache.maxsize)
        self.repository.cache = self._cache
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
        # colliding and backing off in the busy handler.
        try:
            recordings = self._committer.put(processing_event.events)
        except RecordConflictError:
            # Someone saved one of these first: the copy this save started from, which
            # may be the cached one, is stale, and the retry must read the store.
            for aggregate_id in processing_event.aggregates:
                self._cache.drop(aggregate_id)
            raise
        # When the cache does not fast-forward (one process owns the store), it is
        # updated here, as the library's own _record does.
        if not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self._cache.saved(aggregate_id, aggregate)
        return recordings

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
