"""Artifacts the steps of each task returned."""

from __future__ import annotations

from typing import Any

from domain.tasks import Task
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database


class ArtifactList(Projection):
    """One row per (task, step, artifact name); storing a name again replaces its row."""

    name = "artifacts"
    tables = {  # noqa: RUF012
        "rm_artifacts": (
            "task_id TEXT NOT NULL, step TEXT NOT NULL, name TEXT NOT NULL, size BIGINT NOT NULL, "
            "sha256 TEXT NOT NULL, stored TEXT NOT NULL, position BIGINT NOT NULL, "
            "PRIMARY KEY (task_id, step, name)"
        )
    }

    @handles(Task.ArtifactStored)
    def _stored(self, e: Task.ArtifactStored, position: int, cur: Cursor) -> None:
        task_id = str(e.originator_id)
        cur.execute(
            "DELETE FROM rm_artifacts WHERE task_id = ? AND step = ? AND name = ?",
            (task_id, e.step, e.name),
        )
        cur.execute(
            "INSERT INTO rm_artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_id, e.step, e.name, e.size, e.sha256, iso(e.timestamp), position),
        )


_COLUMNS = ("step", "name", "size", "sha256", "stored")


def list_artifacts(db: Database, task_id: str) -> list[dict[str, Any]]:
    """A task's artifacts in the order they were stored."""
    with db.read() as cur:
        cur.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM rm_artifacts WHERE task_id = ? ORDER BY position, name",
            (task_id,),
        )
        return [dict(zip(_COLUMNS, r, strict=True)) for r in cur.fetchall()]
