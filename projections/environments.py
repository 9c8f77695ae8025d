"""Environment list: every live environment with how many targets are in it."""

from __future__ import annotations

from typing import Any

from domain.environments import Environment
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class EnvironmentList(Projection):
    """One row per live environment."""

    name = "environments"
    tables = {  # noqa: RUF012
        "rm_environments": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, "
            "target_count INTEGER NOT NULL, created TEXT NOT NULL"
        )
    }

    @handles(Environment.Created)
    def _created(self, e: Environment.Created, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_environments VALUES (?, ?, ?, 0, ?)",
            (str(e.originator_id), e.name, e.description, iso(e.timestamp)),
        )

    @handles(Environment.Renamed)
    def _renamed(self, e: Environment.Renamed, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_environments SET name = ? WHERE id = ?", (e.name, str(e.originator_id))
        )

    @handles(Environment.Described)
    def _described(self, e: Environment.Described, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_environments SET description = ? WHERE id = ?",
            (e.description, str(e.originator_id)),
        )

    @handles(Environment.TargetAttached, Environment.TargetDetached)
    def _targets(self, e: Environment.Event, position: int, cur: Cursor) -> None:
        delta = 1 if isinstance(e, Environment.TargetAttached) else -1
        cur.execute(
            "UPDATE rm_environments SET target_count = target_count + ? WHERE id = ?",
            (delta, str(e.originator_id)),
        )

    @handles(Environment.Deleted)
    def _deleted(self, e: Environment.Deleted, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_environments WHERE id = ?", (str(e.originator_id),))


_COLUMNS = "id, name, description, target_count, created"


def _environment(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(("id", "name", "description", "target_count", "created"), row, strict=True))


def list_environments(
    db: Database, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Environments by name; and how many there are in all."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM rm_environments")
        total = cur.fetchone()[0]
        sql, params = page(
            f"SELECT {_COLUMNS} FROM rm_environments ORDER BY lower(name), id", skip, take
        )
        cur.execute(sql, params)
        return [_environment(r) for r in cur.fetchall()], total


def get_environment(db: Database, environment_id: str) -> dict[str, Any] | None:
    """One environment's row, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rm_environments WHERE id = ?", (environment_id,))
        row = cur.fetchone()
        return None if row is None else _environment(row)
