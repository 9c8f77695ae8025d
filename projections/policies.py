"""Machine policy list."""

from __future__ import annotations

from typing import Any

from domain.policies import MachinePolicy, PolicySettings
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class PolicyList(Projection):
    """One row per machine policy."""

    name = "policies"
    tables = {  # noqa: RUF012
        "rm_policies": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, "
            "health_check_interval_s INTEGER NOT NULL, health_check_script TEXT NOT NULL, "
            "connectivity TEXT NOT NULL, cleanup TEXT NOT NULL, cleanup_after_s INTEGER, "
            "created TEXT NOT NULL"
        )
    }

    @handles(MachinePolicy.Created)
    def _created(self, e: MachinePolicy.Created, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(e.originator_id), e.name, *_values(e.settings), iso(e.timestamp)),
        )

    @handles(MachinePolicy.Renamed)
    def _renamed(self, e: MachinePolicy.Renamed, position: int, cur: Cursor) -> None:
        cur.execute("UPDATE rm_policies SET name = ? WHERE id = ?", (e.name, str(e.originator_id)))

    @handles(MachinePolicy.Updated)
    def _updated(self, e: MachinePolicy.Updated, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_policies SET description = ?, health_check_interval_s = ?, "
            "health_check_script = ?, connectivity = ?, cleanup = ?, cleanup_after_s = ? "
            "WHERE id = ?",
            (*_values(e.settings), str(e.originator_id)),
        )


def _values(s: PolicySettings) -> tuple[Any, ...]:
    return (
        s.description, s.health_check_interval_s, s.health_check_script, s.connectivity.value,
        s.cleanup.value, s.cleanup_after_s,
    )


_COLUMNS = (
    "id, name, description, health_check_interval_s, health_check_script, "
    "connectivity, cleanup, cleanup_after_s, created"
)


def _policy(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([c.strip() for c in _COLUMNS.split(",")], row, strict=True))


def list_policies(
    db: Database, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Policies by name; and how many there are in all."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM rm_policies")
        total = cur.fetchone()[0]
        sql, params = page(f"SELECT {_COLUMNS} FROM rm_policies ORDER BY lower(name), id", skip, take)
        cur.execute(sql, params)
        return [_policy(r) for r in cur.fetchall()], total


def get_policy(db: Database, policy_id: str) -> dict[str, Any] | None:
    """One policy's row, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rm_policies WHERE id = ?", (policy_id,))
        row = cur.fetchone()
        return None if row is None else _policy(row)
