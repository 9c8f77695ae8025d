"""Pool list: every live pool with its member count."""

from __future__ import annotations

from typing import Any

from domain.pools import WorkerPool
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class PoolList(Projection):
    """One row per live pool."""

    name = "pools"
    tables = {  # noqa: RUF012
        "rm_pools": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, "
            "is_default INTEGER NOT NULL, sort_order INTEGER NOT NULL, "
            "worker_count INTEGER NOT NULL, created TEXT NOT NULL"
        )
    }

    @handles(WorkerPool.Created)
    def _created(self, e: WorkerPool.Created, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_pools VALUES (?, ?, ?, 0, ?, 0, ?)",
            (str(e.originator_id), e.name, e.description, e.sort_order, iso(e.timestamp)),
        )

    @handles(WorkerPool.Renamed)
    def _renamed(self, e: WorkerPool.Renamed, position: int, cur: Cursor) -> None:
        cur.execute("UPDATE rm_pools SET name = ? WHERE id = ?", (e.name, str(e.originator_id)))

    @handles(WorkerPool.DetailsChanged)
    def _details(self, e: WorkerPool.DetailsChanged, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_pools SET description = ?, sort_order = ? WHERE id = ?",
            (e.description, e.sort_order, str(e.originator_id)),
        )

    @handles(WorkerPool.MadeDefault, WorkerPool.DefaultCleared)
    def _default(self, e: WorkerPool.Event, position: int, cur: Cursor) -> None:
        flag = 1 if isinstance(e, WorkerPool.MadeDefault) else 0
        cur.execute("UPDATE rm_pools SET is_default = ? WHERE id = ?", (flag, str(e.originator_id)))

    @handles(WorkerPool.MemberAdded, WorkerPool.MemberRemoved)
    def _members(self, e: WorkerPool.Event, position: int, cur: Cursor) -> None:
        delta = 1 if isinstance(e, WorkerPool.MemberAdded) else -1
        cur.execute(
            "UPDATE rm_pools SET worker_count = worker_count + ? WHERE id = ?",
            (delta, str(e.originator_id)),
        )

    @handles(WorkerPool.Deleted)
    def _deleted(self, e: WorkerPool.Deleted, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_pools WHERE id = ?", (str(e.originator_id),))


_COLUMNS = "id, name, description, is_default, sort_order, worker_count, created"


def _pool(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "name": row[1],
        "description": row[2],
        "is_default": bool(row[3]),
        "sort_order": row[4],
        "worker_count": row[5],
        "created": row[6],
    }


def list_pools(db: Database, skip: int = 0, take: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Pools by sort order, then name; and how many there are in all."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM rm_pools")
        total = cur.fetchone()[0]
        sql, params = page(
            f"SELECT {_COLUMNS} FROM rm_pools ORDER BY sort_order, lower(name), id", skip, take
        )
        cur.execute(sql, params)
        return [_pool(r) for r in cur.fetchall()], total


def get_pool(db: Database, pool_id: str) -> dict[str, Any] | None:
    """One pool's row, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rm_pools WHERE id = ?", (pool_id,))
        row = cur.fetchone()
        return None if row is None else _pool(row)
