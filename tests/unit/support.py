"""Helpers shared by the unit tests: a test actor and ways to look at the event log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from domain.actors import Actor, ActorKind
from domain.app import Shoal

ALICE = Actor(ActorKind.USER, "user-alice", "Alice")
BOB = Actor(ActorKind.API_KEY, "key-bob", "Bob's key")


def head(app: Shoal) -> int:
    """The position of the newest event in the log (0 when the log is empty)."""
    return app.recorder.max_notification_id() or 0


def notifications_after(app: Shoal, position: int) -> list[Any]:
    """Stored notifications newer than ``position``, oldest first."""
    return list(app.recorder.select_notifications(start=position + 1, limit=10_000))


def events_after(app: Shoal, position: int) -> list[Any]:
    """Decoded domain events newer than ``position``, oldest first."""
    return [app.mapper.to_domain_event(n) for n in notifications_after(app, position)]


def originators_after(app: Shoal, position: int) -> set[UUID]:
    """Ids of the aggregates that got events after ``position``."""
    return {n.originator_id for n in notifications_after(app, position)}


def replay(app: Shoal, aggregate_id: UUID) -> Any:
    """The aggregate rebuilt from its stored events alone (no cache, no live object)."""
    aggregate = None
    stored: list[Any] = list(app.events.get(aggregate_id))
    for event in stored:
        aggregate = event.mutate(aggregate)
    assert aggregate is not None, f"no events stored for {aggregate_id}"
    return aggregate


@contextmanager
def writes_nothing(app: Shoal) -> Iterator[None]:
    """Fail if the block writes any event."""
    before = head(app)
    yield
    assert head(app) == before, f"expected no new events, got {events_after(app, before)}"


class SaveSpy:
    """Counts the saves an Application makes, through its public ``on_saved`` hook."""

    def __init__(self, app: Shoal) -> None:
        self.positions: list[int] = []
        app.on_saved(self.positions.append)
