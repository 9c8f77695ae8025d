"""The projection runner on real databases: resume after a restart, all-or-nothing
batches, few transactions for a long log, and rebuild on a version bump."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar
from uuid import UUID

import pytest

from adapters.store import ApplicationLog
from domain.app import Shoal
from domain.workers import CommsStyle
from projections.audit import read_events
from projections.base import Projection
from projections.catalog import all_projections
from projections.pools import PoolList, list_pools
from projections.runner import ProjectionRunner
from projections.sql import Cursor
from projections.workers import list_workers
from tests.helpers import TESTER, rid, wait_until
from tests.integration.conftest import Views

pytestmark = pytest.mark.integration

Runners = Callable[..., ProjectionRunner]


def tracking(views: Views) -> dict[str, tuple[int, int]]:
    """projection -> (version, position), as stored."""
    with views.read() as cur:
        cur.execute("SELECT projection, version, position FROM rm_tracking")
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def count(views: Views, table: str) -> int:
    with views.read() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table}")  # table names are the test's own
        return int(cur.fetchone()[0])


def register(app: Shoal, pool_name: str, *worker_names: str) -> dict[str, UUID]:
    """A new pool with these workers in it; returns the workers' ids by name."""
    pool = app.create_pool(name=pool_name, actor=TESTER).aggregate
    return {
        name: app.register_worker(
            name=name, pool_ids=(pool.id,), comms_style=CommsStyle.POLLING, actor=TESTER
        ).aggregate.id
        for name in worker_names
    }


def event_count(app: Shoal, after: int = 0) -> int:
    return len(
        app.recorder.select_notifications(start=after, limit=10**6, inclusive_of_start=False)
    )


def test_a_new_runner_resumes_where_the_last_one_stopped(
    app: Shoal, new_views: Callable[..., Views], new_runner: Runners
) -> None:
    first = register(app, "first", "a-1", "a-2")
    views = new_views()
    runner = new_runner(app, views, poll_interval=0.05)
    runner.setup()
    runner.start()
    assert runner.watch.wait(app.recorder.max_notification_id() or 0, timeout=5)
    runner.stop()
    stopped_at = runner.position

    register(app, "second", "b-1")
    app.update_worker(first["a-1"], capacity=9, actor=TESTER)

    restarted = new_runner(app, new_views())  # a new process: new connections, same tables
    restarted.setup()
    assert restarted.position == stopped_at
    applied = restarted.catch_up()
    last = app.recorder.max_notification_id()

    assert applied == event_count(app, after=stopped_at) > 0
    assert {position for _, position in tracking(views).values()} == {last}
    workers, total = list_workers(views)
    assert (sorted(w["name"] for w in workers), total) == (["a-1", "a-2", "b-1"], 3)
    assert {w["name"]: w["capacity"] for w in workers}["a-1"] == 9
    counts = {p["name"]: p["worker_count"] for p in list_pools(views)[0]}
    assert (counts["first"], counts["second"]) == (2, 1)
    audit = [e["position"] for e in read_events(views, limit=10**6).items]
    assert len(audit) == len(set(audit)) == event_count(app)
    assert restarted.catch_up() == 0  # nothing is applied twice


class Exploding(Projection):
    """Writes one row per event and, while armed, fails on its Nth event as a database
    that went away would (the database's fault, not the event's: the batch is retried,
    never set aside; see test_set_aside.py for the others)."""

    name = "exploding"
    tables: ClassVar[dict[str, str]] = {"rm_exploding": "position BIGINT PRIMARY KEY"}

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.seen = 0

    def process(self, event: Any, position: int, cur: Cursor) -> None:
        self.seen += 1
        if self.seen == self.fail_on:
            raise OSError(f"injected fault at position {position}")
        cur.execute("INSERT INTO rm_exploding VALUES (?)", (position,))


def test_a_failing_batch_leaves_no_trace_and_a_restart_completes_it(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    register(app, "before", "w-1")
    first = new_runner(app, views, [*all_projections(), Exploding()])
    first.setup()
    first.catch_up()
    done = first.position
    before = first.dump()

    register(app, "after", "w-2", "w-3")  # a batch of several events
    new = event_count(app) - count(views, "rm_audit")
    assert new > 3
    fault = Exploding(fail_on=3)  # the last projection: the others wrote the batch first
    runner = new_runner(app, views, [*all_projections(), fault])
    runner.setup()
    with pytest.raises(OSError, match="injected fault"):
        runner.catch_up()

    assert {position for _, position in tracking(views).values()} == {done}
    assert runner.position == done
    assert runner.dump() == before  # not one row of the batch, in any projection
    assert count(views, "rm_exploding") == count(views, "rm_audit")

    fault.fail_on = None
    assert runner.catch_up() == new
    last = app.recorder.max_notification_id()
    assert {position for _, position in tracking(views).values()} == {last}
    restarted = new_runner(app, views, [*all_projections(), Exploding()])
    restarted.setup()
    assert restarted.catch_up() == 0
    assert count(views, "rm_exploding") == count(views, "rm_audit") == event_count(app)
    assert sorted(w["name"] for w in list_workers(views)[0]) == ["w-1", "w-2", "w-3"]


def test_a_long_log_is_applied_in_few_transactions(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    pool = app.create_pool(name=rid("busy"), actor=TESTER).aggregate
    for chunk in range(5):
        for i in range(450):
            pool.change_details(f"step {chunk}-{i}", i, TESTER)
        app.save(pool)
    total = event_count(app)
    assert total >= 2000

    batch_size = 500
    runner = new_runner(app, views, batch_size=batch_size)
    runner.setup()
    transactions = 0
    real_write = views.write

    @contextmanager
    def counted() -> Iterator[Any]:
        nonlocal transactions
        transactions += 1
        with real_write() as cur:
            yield cur

    views.write = counted  # type: ignore[method-assign]
    try:
        assert runner.catch_up() == total
    finally:
        del views.write
    print(f"\n{total} events in {transactions} transactions (batch {batch_size})")
    assert transactions <= math.ceil(total / batch_size) + 1
    assert runner.position == app.recorder.max_notification_id()
    row = next(p for p in list_pools(views)[0] if p["id"] == str(pool.id))
    assert (row["description"], row["sort_order"]) == ("step 4-449", 449)
    assert count(views, "rm_audit") == total


class PoolListV2(PoolList):
    """The pool list after a change of meaning: same tables, new version."""

    version = 2


def test_a_changed_version_rebuilds_that_projection_at_setup(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    register(app, "kept", "k-1")
    v1 = new_runner(app, views, [PoolList()])
    v1.setup()
    v1.catch_up()
    with views.write() as cur:  # a row the current handlers would never write
        cur.execute("UPDATE rm_pools SET description = 'stale' WHERE name = 'kept'")

    same = new_runner(app, views, [PoolList()])
    same.setup()
    same.catch_up()
    assert {p["name"]: p["description"] for p in list_pools(views)[0]}["kept"] == "stale"

    v2 = new_runner(app, views, [PoolListV2()])
    v2.setup()
    assert tracking(views)["pools"] == (2, 0)
    assert list_pools(views) == ([], 0)
    v2.catch_up()
    assert tracking(views)["pools"] == (2, app.recorder.max_notification_id())
    pools = {p["name"]: p for p in list_pools(views)[0]}
    assert (pools["kept"]["description"], pools["kept"]["worker_count"]) == ("", 1)
    assert len(pools) == 2  # the default pool and "kept"


class FlakyLog:
    """The Application's log, failing the next ``failures`` reads."""

    def __init__(self, app: Shoal) -> None:
        self.log = ApplicationLog(app)
        self.failures = 0

    def read(self, after: int, limit: int, upto: int | None = None) -> Sequence[tuple[int, Any]]:
        if self.failures:
            self.failures -= 1
            raise OSError("the store is away")
        return self.log.read(after, limit, upto)

    def max_position(self) -> int:
        return self.log.max_position()


def test_a_following_runner_reports_each_batch_a_failure_and_its_recovery(
    app: Shoal, views: Views
) -> None:
    reports: list[tuple[str, object]] = []
    log = FlakyLog(app)
    runner = ProjectionRunner(
        log, views, all_projections(), poll_interval=30, settle=0,
        on_progress=lambda p: reports.append(("progress", p)),
        on_error=lambda e: reports.append(("error", e)),
    )
    runner.setup()
    runner.start()
    try:
        saved = app.create_pool(name=rid("pool"), actor=TESTER).position
        runner.wake(saved)
        wait_until(lambda: ("progress", saved) in reports, 5, what="progress")
        reports.clear()
        runner.wake(saved)  # already there: not even a look
        log.failures = 1
        runner.wake()  # a look that fails, with nothing new to apply afterwards
        wait_until(lambda: len(reports) == 2, 5, what="an error and the recovery")
        assert reports == [("error", "OSError: the store is away"), ("progress", saved)]
        assert runner.last_error is None
    finally:
        runner.stop()
