"""An event a projection cannot apply is set aside for that projection alone, on real
databases: the read models go on, the event is named, and errors that are the database's
fault (a lost connection, a locked database, a missing table) are retried, not set
aside."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from domain.app import Shoal
from domain.pools import WorkerPool
from projections.audit import read_events
from projections.base import Projection
from projections.catalog import all_projections
from projections.pools import list_pools
from projections.skipped import SkippedEvent, skipped_count, skipped_events
from projections.sql import Cursor
from tests.helpers import TESTER
from tests.integration.conftest import Views
from tests.integration.test_runner import Runners, count, event_count, register, tracking

pytestmark = pytest.mark.integration


class PoolSizes(Projection):
    """Keeps a number per pool that no column can hold for a pool called "poison": the
    database itself refuses the row (SQLite in its driver, PostgreSQL at the commit of a
    pipelined batch), every time it is tried."""

    name = "pool_sizes"
    tables: ClassVar[dict[str, str]] = {"rm_pool_sizes": "position BIGINT PRIMARY KEY, size BIGINT"}

    def process(self, event: Any, position: int, cur: Cursor) -> None:
        if isinstance(event, WorkerPool.Created):
            size = 2**63 if event.name == "poison" else len(event.name)
            cur.execute("INSERT INTO rm_pool_sizes VALUES (?, ?)", (position, size))


def positions(views: Views) -> list[int]:
    with views.read() as cur:
        cur.execute("SELECT position FROM rm_pool_sizes ORDER BY position")
        return [int(r[0]) for r in cur.fetchall()]


def test_an_event_a_projection_cannot_apply_is_set_aside_for_it_alone(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    before = app.create_pool(name="before", actor=TESTER).position
    poison = app.create_pool(name="poison", actor=TESTER).position
    register(app, "after", "w-1")  # more events in the same batch, after the bad one
    progress: list[int] = []
    runner = new_runner(app, views, [*all_projections(), PoolSizes()], on_progress=progress.append)
    runner.setup()

    assert runner.catch_up() == event_count(app)  # it did not stop at the bad event
    # One batch, gone through event by event: the server heard of each step forward.
    assert progress == sorted(progress) and len(set(progress)) > event_count(app) / 2

    last = app.recorder.max_notification_id()
    assert {position for _, position in tracking(views).values()} == {last}
    [skipped] = skipped_events(views)
    assert skipped[:3] == SkippedEvent("pool_sizes", poison, "WorkerPool.Created", "")[:3]
    assert skipped.error.split(":")[0] in ("OverflowError", "NumericValueOutOfRange")
    assert skipped_count(views) == 1
    # Only that projection lacks it; the others have every event, the bad one included.
    assert {p["name"] for p in list_pools(views)[0]} >= {"before", "poison", "after"}
    assert count(views, "rm_audit") == event_count(app)
    sizes = positions(views)
    assert before in sizes and poison not in sizes and max(sizes) > poison

    # A rebuild forgets what was set aside, and meets the same event again.
    runner.reset()
    assert skipped_events(views) == []
    runner.catch_up()
    assert [s.position for s in skipped_events(views)] == [poison]


def test_an_event_this_version_cannot_decode_is_set_aside_by_every_projection(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    app.create_pool(name="before", actor=TESTER)
    # As a newer version of Shoal would have written it.
    topic = "domain.pools:WorkerPool.Renumbered"
    app.recorder.insert_events([StoredEvent(
        originator_id=uuid4(), originator_version=1, topic=topic, state=b"{}",
    )])
    unknown = app.recorder.max_notification_id()
    app.create_pool(name="after", actor=TESTER)
    runner = new_runner(app, views)
    runner.setup()

    runner.catch_up()

    assert runner.position == app.recorder.max_notification_id()
    skipped = skipped_events(views)
    assert {s.projection for s in skipped} == {p.name for p in all_projections()}
    assert {(s.position, s.event_type) for s in skipped} == {(unknown, topic)}
    assert skipped_count(views) == 1
    assert {p["name"] for p in list_pools(views)[0]} >= {"before", "after"}
    audit = [e["position"] for e in read_events(views, limit=10**6).items]
    assert unknown not in audit and len(audit) == event_count(app) - 1


class Flaky(Projection):
    """Fails on one event as its database does when the fault is the database's: away,
    busy (``error``), or without a table the projection writes (``table``, the engine's
    own error)."""

    name = "flaky"
    tables: ClassVar[dict[str, str]] = {"rm_flaky": "position BIGINT PRIMARY KEY"}

    def __init__(self, on: int, error: BaseException | None = None, table: str = "rm_flaky") -> None:
        self.on = on
        self.error = error
        self.table = table

    def process(self, event: Any, position: int, cur: Cursor) -> None:
        if position == self.on and self.error is not None:
            raise self.error
        table = self.table if position == self.on else "rm_flaky"
        cur.execute(f"INSERT INTO {table} VALUES (?)", (position,))  # names are the test's own


@pytest.mark.parametrize("kind", ["busy", "os", "table"])
def test_an_error_that_is_the_databases_fault_is_retried_whole_and_nothing_is_set_aside(
    app: Shoal, views: Views, new_runner: Runners, kind: str
) -> None:
    app.create_pool(name="one", actor=TESTER)
    on = app.create_pool(name="two", actor=TESTER).position
    app.create_pool(name="three", actor=TESTER)
    if kind == "table":  # e.g. renamed by hand, or dropped under a running server
        flaky = Flaky(on, table="rm_renamed")
    else:
        flaky = Flaky(on, views.database_faults[0]("database is locked") if kind == "busy"
                      else OSError("disk I/O error"))
    runner = new_runner(app, views, [*all_projections(), flaky])
    runner.setup()

    with pytest.raises(Exception) as failed:
        runner.catch_up()
    assert runner.passes(failed.value), failed.value
    assert runner.position == 0 and skipped_events(views) == []
    assert count(views, "rm_flaky") == count(views, "rm_audit") == 0

    flaky.error, flaky.table = None, "rm_flaky"  # the database is back to normal
    assert runner.catch_up() == event_count(app)
    assert count(views, "rm_flaky") == event_count(app) and skipped_events(views) == []
