"""Events a projection could not apply, set aside so the read models go on.

A read model that stops at an event it cannot apply (a value its columns cannot hold, an
event of a newer version it cannot decode, a bug in a handler) stops every read of the
server: reads wait for the read models to include the caller's own writes, and answer
503 once they give up. The runner therefore sets such an event aside for that projection
only, after it failed on its own in a transaction of its own (never for errors that are
the database's fault, such as a lost connection, a locked database or a missing table),
and records it here. The event
stays in the log: once the cause is fixed, `shoal replay` applies it and empties this
table.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from projections.sql import Cursor, Database

SKIPPED_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_skipped ("
    "projection TEXT NOT NULL, position BIGINT NOT NULL, event_type TEXT NOT NULL, "
    "error TEXT NOT NULL, PRIMARY KEY (projection, position))"
)

# An error message can quote the event's data (a log line, say): enough to find the
# cause, not a second copy of the event.
MAX_ERROR_CHARS = 500


class SkippedEvent(NamedTuple):
    """One event one projection set aside."""

    projection: str
    position: int
    event_type: str
    error: str


class Undecodable(NamedTuple):
    """A stored event this version cannot turn back into a domain event (e.g. one a newer
    version wrote): every projection sets it aside."""

    topic: str
    error: str


def event_type_of(event: Any) -> str:
    """How the event is named in the log: ``Aggregate.Event``, or the stored topic of one
    that could not be decoded."""
    if isinstance(event, Undecodable):
        return event.topic
    return type(event).__qualname__


def describe(exc: BaseException) -> str:
    """The error as recorded: type and message, cut to MAX_ERROR_CHARS."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def record(cur: Cursor, skipped: SkippedEvent) -> None:
    """Note that ``skipped.projection`` passed over the event at ``skipped.position``
    (once: another node sharing the tables may have noted it first)."""
    cur.execute(
        "INSERT INTO rm_skipped (projection, position, event_type, error) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (projection, position) DO NOTHING",
        tuple(skipped),
    )


def forget(cur: Cursor, projection: str | None = None) -> None:
    """Drop the notes of one projection (it is being rebuilt), or of all."""
    if projection is None:
        cur.execute("DELETE FROM rm_skipped")
    else:
        cur.execute("DELETE FROM rm_skipped WHERE projection = ?", (projection,))


def skipped_events(db: Database, limit: int = 1000) -> list[SkippedEvent]:
    """The events set aside, by position then projection."""
    with db.read() as cur:
        cur.execute(
            "SELECT projection, position, event_type, error FROM rm_skipped "
            "ORDER BY position, projection LIMIT ?", (limit,),
        )
        return [SkippedEvent(r[0], int(r[1]), r[2], r[3]) for r in cur.fetchall()]


def skipped_count(db: Database) -> int:
    """How many distinct events some projection set aside."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(DISTINCT position) FROM rm_skipped")
        return int(cur.fetchone()[0])
