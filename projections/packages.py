"""The built-in package feed: one row per pushed package version."""

from __future__ import annotations

from typing import Any

from domain.packages import Package
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class PackageList(Projection):
    """One row per pushed version."""

    name = "packages"
    tables = {  # noqa: RUF012
        "rm_packages": (
            "key TEXT PRIMARY KEY, id TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "size BIGINT NOT NULL, file_name TEXT NOT NULL, pushed TEXT NOT NULL, "
            "pushed_by TEXT NOT NULL"
        )
    }

    @handles(Package.Pushed)
    def _pushed(self, e: Package.Pushed, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_packages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (str(e.originator_id), e.package_id, e.package_version, e.sha256, e.size, e.file_name,
             iso(e.timestamp), e.actor.name),
        )


_COLUMNS = ("id", "version", "sha256", "size", "file_name", "pushed", "pushed_by")


def list_packages(
    db: Database, package_id: str | None = None, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Packages by id, newest push first within an id; optionally one id only."""
    where, params = ("WHERE id = ?", (package_id,)) if package_id else ("", ())
    with db.read() as cur:
        cur.execute(f"SELECT COUNT(*) FROM rm_packages {where}", params)
        total = cur.fetchone()[0]
        sql, bounds = page(
            f"SELECT {', '.join(_COLUMNS)} FROM rm_packages {where} ORDER BY id, pushed DESC, version",
            skip, take,
        )
        cur.execute(sql, (*params, *bounds))
        return [dict(zip(_COLUMNS, r, strict=True)) for r in cur.fetchall()], total
