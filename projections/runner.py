"""Runs projections: batched catch-up, live follow, tracking, rebuild and verify.

The library's stock runner commits one transaction per event (~3,000 events/s on
SQLite). This one reads the log in batches and applies a whole batch, for every
projection, in one transaction together with the tracking rows, so a crash can never
leave a view ahead of or behind its tracking position.

A batch that fails with an error that is the database's fault (a lost connection, a
locked database, a missing table) is tried again whole, after a back-off. One that fails
otherwise is applied again one event at a time, and an event that a projection cannot
apply even on its own is set aside for that projection (projections/skipped.py), so one
bad event never stops the read models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from projections.base import Projection
from projections.skipped import (
    SKIPPED_DDL,
    SkippedEvent,
    Undecodable,
    describe,
    event_type_of,
    forget,
    record,
)
from projections.sql import Cursor, Database, Row
from projections.watch import PositionWatch

log = logging.getLogger("shoal.projections")

TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_tracking ("
    "projection TEXT PRIMARY KEY, version INTEGER NOT NULL, position BIGINT NOT NULL)"
)
DEFAULT_BATCH = 2000
MAX_BACKOFF_S = 30.0


class EventLog(Protocol):
    """The ordered log the projections read: (position, event) pairs."""

    def read(self, after: int, limit: int, upto: int | None = None) -> Sequence[tuple[int, Any]]:
        """Up to ``limit`` events after position ``after`` (and not past ``upto``)."""
        ...

    def max_position(self) -> int:
        """The position of the last event written."""
        ...


class ProjectionRunner:
    """Keeps a set of projections up to date with the log.

    ``start()`` runs a thread that catches up and then follows: it sleeps until
    ``wake()`` is called (the Application calls it after every save, so events reach the
    views within milliseconds) or ``poll_interval`` passes (writes made by other
    processes, e.g. other server nodes on PostgreSQL, without a notifier). Once woken it
    lets ``settle`` seconds pass before it reads, so that a busy server's saves reach the
    views a few at a time, not one transaction (and thread switch) per save.

    ``on_progress(position)`` is called after every committed batch, and once more when
    following works again after a failure; ``on_error(error)`` when a batch fails while
    following. The projector process (adapters/projector.py) reports both to the server.
    """

    def __init__(
        self,
        log: EventLog,
        db: Database,
        projections: Sequence[Projection],
        *,
        batch_size: int = DEFAULT_BATCH,
        poll_interval: float = 1.0,
        settle: float = 0.002,
        on_progress: Callable[[int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.db = db
        self.projections = list(projections)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.settle = settle
        self.watch = PositionWatch()
        self._positions: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._on_progress = on_progress
        self._on_error = on_error

    # -- set-up --------------------------------------------------------------------------

    def setup(self) -> None:
        """Create tables; rebuild any projection whose version changed since last run."""
        with self.db.write() as cur:
            cur.execute(TRACKING_DDL)
            cur.execute(SKIPPED_DDL)
            cur.execute("SELECT projection, version, position FROM rm_tracking")
            tracked = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
            for p in self.projections:
                version, position = tracked.get(p.name, (None, 0))
                if version is not None and version != p.version:
                    log.info("projection %s changed (v%s -> v%s): rebuilding", p.name, version, p.version)
                    p.drop(cur)
                    forget(cur, p.name)
                    position = 0
                p.create(cur)
                if version != p.version:
                    cur.execute("DELETE FROM rm_tracking WHERE projection = ?", (p.name,))
                    cur.execute(
                        "INSERT INTO rm_tracking VALUES (?, ?, ?)", (p.name, p.version, position)
                    )
                self._positions[p.name] = position
        self.watch.reset(self.position)

    @property
    def position(self) -> int:
        """The position every projection has reached."""
        return min(self._positions.values(), default=0)

    # -- processing ----------------------------------------------------------------------

    def _reload_positions(self) -> None:
        with self.db.read() as cur:
            cur.execute("SELECT projection, position FROM rm_tracking")
            found = dict(cur.fetchall())
        for p in self.projections:
            self._positions[p.name] = int(found.get(p.name, 0))

    def step(self, until: int | None = None) -> int:
        """Apply at most one batch; returns how many events it applied (or set aside)."""
        start = self.position
        if until is not None and start >= until:
            return 0
        batch = self.log.read(start, self.batch_size, until)
        if not batch:
            return 0
        reason = self._failure(batch, self.projections)
        if reason is not None:
            self._apply_one_at_a_time(start, batch, reason)
        self._progressed()
        return len(batch)

    def _progressed(self) -> None:
        self.watch.advance(self.position)
        if self._on_progress is not None:
            self._on_progress(self.position)

    def _apply_one_at_a_time(
        self, after: int, batch: Sequence[tuple[int, Any]], reason: str
    ) -> None:
        # Something in the batch fails every time it is tried: find it, one event per
        # transaction, so that only what cannot be applied is set aside.
        log.warning("a projection batch failed; applying its events one at a time",
                    extra={"after": after, "events": len(batch), "reason": reason})
        for position, event in batch:
            self._apply_alone(position, event)
            # Reads waiting for this part of the log go on, and the server, which takes a
            # projector that is silent for a minute for hung, hears from this one.
            self._progressed()

    def passes(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the database's fault or the machine's (a lost connection, a
        locked or full database, a missing table), not the events': then the batch is
        tried again later, and nothing is set aside."""
        return isinstance(exc, (OSError, MemoryError, *self.db.database_faults))

    def _failure(
        self, batch: Sequence[tuple[int, Any]], projections: Sequence[Projection]
    ) -> str | None:
        """Apply ``batch`` to ``projections`` (see _apply); None when that worked, else
        why not, when the events are at fault: one cannot be decoded, or applying them
        failed with an error that is not the database's. Those that are (passes) raise,
        for the whole batch to be tried again later, as does _Overtaken."""
        for _, event in batch:
            if isinstance(event, Undecodable):
                return event.error
        try:
            self._apply(batch, projections)
        except _Overtaken:
            raise
        except Exception as exc:
            if self.passes(exc):
                raise
            return describe(exc)
        return None

    def _apply(self, batch: Sequence[tuple[int, Any]], projections: Sequence[Projection]) -> None:
        """Apply ``batch`` to the ``projections`` still behind it, in one transaction with
        their tracking rows."""
        last = batch[-1][0]
        with self.db.write() as cur:
            # Projections that had reached the same position (normally all of them) move
            # on together, with one tracking statement rather than one each.
            behind: dict[int, list[str]] = {}
            for p in projections:
                done = self._positions[p.name]
                if done >= last:
                    continue
                for position, event in batch:
                    if position > done:
                        p.process(event, position, cur)
                behind.setdefault(done, []).append(p.name)
            for done, names in behind.items():
                if not self._track(cur, names, done, last):
                    raise _Overtaken
        for p in projections:
            self._positions[p.name] = max(self._positions[p.name], last)

    def _apply_alone(self, position: int, event: Any) -> None:
        """Apply one event in a transaction of its own; when that fails for good, apply it
        to each projection on its own, setting it aside for those that cannot."""
        behind = [p for p in self.projections if self._positions[p.name] < position]
        if not behind:
            return
        if self._failure([(position, event)], behind) is None:
            return
        set_aside = [s for p in behind if (s := self._apply_or_set_aside(p, position, event))]
        if set_aside:  # else it failed only together with others, and each took it alone
            log.error("an event could not be applied and was set aside; the read models go on "
                      "without it (`shoal replay` applies it once the cause is fixed)",
                      extra={"position": position, "event_type": event_type_of(event),
                             "projections": ", ".join(s.projection for s in set_aside),
                             "reason": set_aside[0].error})

    def _apply_or_set_aside(self, p: Projection, position: int, event: Any) -> SkippedEvent | None:
        """Apply one event to one projection; None when it could, else what was set aside."""
        error = self._failure([(position, event)], [p])
        if error is None:
            return None
        skipped = SkippedEvent(p.name, position, event_type_of(event), error)
        with self.db.write() as cur:
            record(cur, skipped)
            if not self._track(cur, [p.name], self._positions[p.name], position):
                raise _Overtaken
        self._positions[p.name] = position
        return skipped

    def _track(self, cur: Cursor, names: list[str], expected: int, position: int) -> bool:
        # Compare-and-set: if another node sharing these tables moved on, roll back.
        marks = ", ".join("?" * len(names))
        cur.execute(
            f"UPDATE rm_tracking SET position = ? WHERE position = ? AND projection IN ({marks})",
            (position, expected, *names),
        )
        return cur.rowcount == len(names)

    def catch_up(self, until: int | None = None) -> int:
        """Apply batches until the log (or ``until``) is reached; returns events applied."""
        total = 0
        while True:
            try:
                applied = self.step(until)
            except _Overtaken:
                self._reload_positions()
                continue
            if applied == 0:
                return total
            total += applied

    # -- following -----------------------------------------------------------------------

    def wake(self, position: int | None = None) -> None:
        """New events were written (up to ``position``, when known): look now rather than
        at the next poll, unless the views already include them."""
        if position is not None and position <= self.position:
            return
        self._wake.set()

    def start(self) -> None:
        """Catch up and follow in a thread of its own."""
        self._thread = threading.Thread(target=self._follow, name="shoal-projections", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.catch_up()
                if self.last_error is not None and self._on_progress is not None:
                    self._on_progress(self.position)  # recovered, even with nothing new to apply
                self.last_error = None
                backoff = 0.5
            except Exception as exc:  # keep following; the error is logged and retried
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("projection batch failed; retrying in %.1fs", backoff)
                if self._on_error is not None:
                    self._on_error(self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self._reload_positions_quietly()
                continue
            if self._wake.wait(self.poll_interval) and self.settle > 0:
                self._stop.wait(self.settle)

    def _reload_positions_quietly(self) -> None:
        try:
            self._reload_positions()
        except Exception:
            log.exception("could not re-read projection positions")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following; waits for the batch in progress to commit."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- rebuild and verify --------------------------------------------------------------

    def reset(self) -> None:
        """Empty every projection and set it back to position 0, in one transaction."""
        with self.db.write() as cur:
            forget(cur)
            for p in self.projections:
                p.drop(cur)
                p.create(cur)
                cur.execute("UPDATE rm_tracking SET position = 0 WHERE projection = ?", (p.name,))
                self._positions[p.name] = 0
        self.watch.reset(0)

    def rebuild(self) -> int:
        """Drop every projection's tables and replay the whole log into them."""
        self.reset()
        return self.catch_up()

    def dump(self) -> dict[str, dict[str, list[Row]]]:
        """Every projection's rows, for comparison."""
        with self.db.read() as cur:
            return {p.name: p.dump(cur) for p in self.projections}


class _Overtaken(Exception):
    """Another runner committed this batch first."""


def diff(live: dict[str, dict[str, list[Row]]], rebuilt: dict[str, dict[str, list[Row]]]) -> list[str]:
    """Human-readable differences between two dumps; empty when they are equal."""
    lines: list[str] = []
    for name in sorted(set(live) | set(rebuilt)):
        for table in sorted(set(live.get(name, {})) | set(rebuilt.get(name, {}))):
            a = set(live.get(name, {}).get(table, []))
            b = set(rebuilt.get(name, {}).get(table, []))
            lines += [f"{name}/{table}: only in live view:    {row!r}" for row in sorted(a - b, key=repr)]
            lines += [f"{name}/{table}: only in rebuilt view: {row!r}" for row in sorted(b - a, key=repr)]
    return lines
