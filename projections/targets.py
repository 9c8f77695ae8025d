"""Target list: every live deployment target."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson

from domain.targets import DeploymentTarget
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class TargetList(Projection):
    """One row per live target; roles and environment ids as JSON lists."""

    name = "targets"
    tables = {  # noqa: RUF012
        "rm_targets": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, roles TEXT NOT NULL, "
            "environment_ids TEXT NOT NULL, default_worker_pool_id TEXT, "
            "is_disabled INTEGER NOT NULL, created TEXT NOT NULL"
        )
    }

    @handles(DeploymentTarget.Created)
    def _created(self, e: DeploymentTarget.Created, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_targets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(e.originator_id), e.name, e.kind.value, _json(e.roles),
                _json(e.environment_ids), _id(e.default_worker_pool_id),
                1 if e.is_disabled else 0, iso(e.timestamp),
            ),
        )

    @handles(DeploymentTarget.Renamed)
    def _renamed(self, e: DeploymentTarget.Renamed, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "name", e.name)

    @handles(DeploymentTarget.RolesChanged)
    def _roles(self, e: DeploymentTarget.RolesChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "roles", _json(e.roles))

    @handles(DeploymentTarget.EnvironmentsChanged)
    def _environments(
        self, e: DeploymentTarget.EnvironmentsChanged, position: int, cur: Cursor
    ) -> None:
        self._set(cur, e.originator_id, "environment_ids", _json(e.environment_ids))

    @handles(DeploymentTarget.DefaultPoolChanged)
    def _pool(self, e: DeploymentTarget.DefaultPoolChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, "default_worker_pool_id", _id(e.default_worker_pool_id))

    @handles(DeploymentTarget.Disabled, DeploymentTarget.Enabled)
    def _disabled(self, e: DeploymentTarget.Event, position: int, cur: Cursor) -> None:
        flag = 1 if isinstance(e, DeploymentTarget.Disabled) else 0
        self._set(cur, e.originator_id, "is_disabled", flag)

    @handles(DeploymentTarget.Deleted)
    def _deleted(self, e: DeploymentTarget.Deleted, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_targets WHERE id = ?", (str(e.originator_id),))

    @staticmethod
    def _set(cur: Cursor, target_id: UUID, column: str, value: Any) -> None:
        # ``column`` is always one of this module's literals, never input.
        cur.execute(f"UPDATE rm_targets SET {column} = ? WHERE id = ?", (value, str(target_id)))


def _json(values: tuple[Any, ...]) -> str:
    return orjson.dumps([str(v) for v in values]).decode()


def _id(value: UUID | None) -> str | None:
    return None if value is None else str(value)


_FIELDS = (
    "id", "name", "kind", "roles", "environment_ids", "default_worker_pool_id", "is_disabled",
    "created",
)
_COLUMNS = ", ".join(_FIELDS)


def _target(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_FIELDS, row, strict=True))
    out["roles"] = orjson.loads(out["roles"])
    out["environment_ids"] = orjson.loads(out["environment_ids"])
    out["is_disabled"] = bool(out["is_disabled"])
    return out


def list_targets(
    db: Database, *, environment: str | None = None, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Targets by name, only those in ``environment`` (an id) when given; and how many
    match in all."""
    clause, params = "", []
    if environment is not None:
        clause, params = " WHERE environment_ids LIKE ?", [f'%"{environment}"%']
    with db.read() as cur:
        cur.execute(f"SELECT COUNT(*) FROM rm_targets{clause}", params)
        total = cur.fetchone()[0]
        sql, paging = page(
            f"SELECT {_COLUMNS} FROM rm_targets{clause} ORDER BY lower(name), id", skip, take
        )
        cur.execute(sql, (*params, *paging))
        return [_target(r) for r in cur.fetchall()], total


def get_target(db: Database, target_id: str) -> dict[str, Any] | None:
    """One target's row, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rm_targets WHERE id = ?", (target_id,))
        row = cur.fetchone()
        return None if row is None else _target(row)


def targets_in_environment(db: Database, environment_id: str) -> list[dict[str, Any]]:
    """Every target in the environment (enabled or not), by name."""
    with db.read() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM rm_targets WHERE environment_ids LIKE ? "
            "ORDER BY lower(name), id",
            (f'%"{environment_id}"%',),
        )
        return [_target(r) for r in cur.fetchall()]
