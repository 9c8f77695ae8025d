"""Pool membership: for each pool, its workers with what routing needs to know."""

from __future__ import annotations

from typing import Any

from domain.tasks import Task
from domain.workers import CommsStyle, HealthStatus, Worker
from projections.base import Projection, handles
from projections.sql import Cursor, Database


class Membership(Projection):
    """One row per (pool, worker). Self-contained: it keeps its own copy of each
    worker's name, health, enabled flag and capacity, so a rebuild needs no other view."""

    name = "membership"
    version = 3
    tables = {  # noqa: RUF012
        "rm_pool_members": (
            "pool_id TEXT NOT NULL, worker_id TEXT NOT NULL, worker_name TEXT NOT NULL, "
            "health_status TEXT NOT NULL, is_disabled INTEGER NOT NULL, "
            "capacity INTEGER NOT NULL, is_online INTEGER NOT NULL, "
            "PRIMARY KEY (pool_id, worker_id)"
        ),
        # Steps given to a worker and not yet ended: its load, for "least busy first".
        "rm_assignments": (
            "task_id TEXT NOT NULL, step TEXT NOT NULL, worker_id TEXT NOT NULL, "
            "PRIMARY KEY (task_id, step)"
        ),
    }
    indexes = (
        "CREATE INDEX IF NOT EXISTS rm_pool_members_worker ON rm_pool_members (worker_id)",
        "CREATE INDEX IF NOT EXISTS rm_assignments_worker ON rm_assignments (worker_id)",
    )

    @handles(Worker.Registered)
    def _registered(self, e: Worker.Registered, position: int, cur: Cursor) -> None:
        # An agent is online once heard from; an SSH worker has no agent to wait for.
        online = int(e.comms_style is CommsStyle.SSH)
        cur.executemany(
            "INSERT INTO rm_pool_members VALUES (?, ?, ?, 'unknown', 0, ?, ?)",
            [(str(p), str(e.originator_id), e.name, e.capacity, online) for p in e.pool_ids],
        )

    @handles(Worker.PoolsChanged)
    def _pools(self, e: Worker.PoolsChanged, position: int, cur: Cursor) -> None:
        worker_id = str(e.originator_id)
        # A worker always has a pool, so its details are on at least one old row.
        cur.execute(
            "SELECT worker_name, health_status, is_disabled, capacity, is_online FROM rm_pool_members "
            "WHERE worker_id = ? LIMIT 1",
            (worker_id,),
        )
        details = cur.fetchone()
        if details is None:
            return
        cur.execute("DELETE FROM rm_pool_members WHERE worker_id = ?", (worker_id,))
        cur.executemany(
            "INSERT INTO rm_pool_members VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(str(p), worker_id, *details) for p in e.pool_ids],
        )

    def _set(self, cur: Cursor, worker_id: Any, column: str, value: Any) -> None:
        cur.execute(
            f"UPDATE rm_pool_members SET {column} = ? WHERE worker_id = ?",
            (value, str(worker_id)),
        )

    @handles(Worker.Renamed)
    def _renamed(self, e: Worker.Renamed, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "worker_name", e.name)

    @handles(Worker.Disabled, Worker.Enabled)
    def _disabled(self, e: Worker.Event, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "is_disabled", int(isinstance(e, Worker.Disabled)))

    @handles(Worker.CapacityChanged)
    def _capacity(self, e: Worker.CapacityChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "capacity", e.capacity)

    @handles(Worker.HealthChecked)
    def _health(self, e: Worker.HealthChecked, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "health_status", e.status.value)

    @handles(Worker.WentOffline)
    def _offline(self, e: Worker.WentOffline, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "health_status", HealthStatus.UNAVAILABLE.value)
        self._set(cur, e.originator_id, "is_online", 0)

    @handles(Worker.CameOnline)
    def _online(self, e: Worker.CameOnline, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_pool_members SET health_status = 'unknown' "
            "WHERE worker_id = ? AND health_status = 'unavailable'",
            (str(e.originator_id),),
        )
        self._set(cur, e.originator_id, "is_online", 1)

    @handles(Worker.Deregistered)
    def _deregistered(self, e: Worker.Deregistered, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_pool_members WHERE worker_id = ?", (str(e.originator_id),))

    @handles(Task.StepAssigned)
    def _assigned(self, e: Task.StepAssigned, position: int, cur: Cursor) -> None:
        # A re-assignment replaces the earlier one; the built-in worker has no row.
        cur.execute(
            "DELETE FROM rm_assignments WHERE task_id = ? AND step = ?",
            (str(e.originator_id), e.step),
        )
        if e.worker_id is not None:
            cur.execute(
                "INSERT INTO rm_assignments VALUES (?, ?, ?)",
                (str(e.originator_id), e.step, str(e.worker_id)),
            )

    @handles(Task.StepFinished, Task.StepRequeued)
    def _step_ended(self, e: Task.StepFinished | Task.StepRequeued, position: int, cur: Cursor) -> None:
        cur.execute(
            "DELETE FROM rm_assignments WHERE task_id = ? AND step = ?",
            (str(e.originator_id), e.step),
        )

    @handles(Task.Finished)
    def _task_ended(self, e: Task.Finished, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_assignments WHERE task_id = ?", (str(e.originator_id),))


def members_of(db: Database, pool_id: str) -> list[dict[str, Any]]:
    """Every member of a pool with health, enabled flag, capacity and how many steps it
    runs now, over all its pools (for routing)."""
    with db.read() as cur:
        cur.execute(
            "SELECT m.worker_id, m.worker_name, m.health_status, m.is_disabled, m.capacity, "
            "(SELECT COUNT(*) FROM rm_assignments a WHERE a.worker_id = m.worker_id), m.is_online "
            "FROM rm_pool_members m WHERE m.pool_id = ? ORDER BY m.worker_id",
            (pool_id,),
        )
        return [
            {
                "worker_id": r[0],
                "worker_name": r[1],
                "health_status": r[2],
                "is_disabled": bool(r[3]),
                "capacity": r[4],
                "running": int(r[5]),
                "online": bool(r[6]),
            }
            for r in cur.fetchall()
        ]


def running_steps(db: Database) -> dict[str, int]:
    """Steps each worker runs now (workers running none are absent)."""
    with db.read() as cur:
        cur.execute("SELECT worker_id, COUNT(*) FROM rm_assignments GROUP BY worker_id")
        return {r[0]: int(r[1]) for r in cur.fetchall()}


def assignments(db: Database) -> list[tuple[str, str, str]]:
    """Every (task id, step, worker id) given to an external worker and not yet ended."""
    with db.read() as cur:
        cur.execute("SELECT task_id, step, worker_id FROM rm_assignments ORDER BY task_id, step")
        return [(r[0], r[1], r[2]) for r in cur.fetchall()]
