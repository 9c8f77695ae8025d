"""Project list: every live project with its current process."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from domain.environments import Environment
from domain.process import Step, current_environment_names
from domain.projects import Project
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


def step_dict(step: Step) -> dict[str, Any]:
    """A step as plain JSON-ready data (enums as values, ids as strings)."""
    data = asdict(step)
    data["action"] = step.action.value
    data["syntax"] = step.syntax.value if step.syntax else None
    data["start"] = step.start.value
    data["condition"] = step.condition.value
    data["worker_pool_id"] = str(step.worker_pool_id) if step.worker_pool_id else None
    data["packages"] = [{"id": p, "version": v} for p, v in step.packages]
    return data


class ProjectList(Projection):
    """One row per live project."""

    name = "projects"
    tables = {  # noqa: RUF012
        "rm_projects": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, "
            "steps TEXT NOT NULL, created TEXT NOT NULL"
        )
    }

    @handles(Project.Created)
    def _created(self, e: Project.Created, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_projects VALUES (?, ?, ?, '[]', ?)",
            (str(e.originator_id), e.name, e.description, iso(e.timestamp)),
        )

    @handles(Project.Renamed)
    def _renamed(self, e: Project.Renamed, position: int, cur: Cursor) -> None:
        cur.execute("UPDATE rm_projects SET name = ? WHERE id = ?", (e.name, str(e.originator_id)))

    @handles(Project.Described)
    def _described(self, e: Project.Described, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_projects SET description = ? WHERE id = ?",
            (e.description, str(e.originator_id)),
        )

    @handles(Project.ProcessChanged)
    def _process(self, e: Project.ProcessChanged, position: int, cur: Cursor) -> None:
        steps = orjson.dumps([step_dict(s) for s in e.steps]).decode()
        cur.execute("UPDATE rm_projects SET steps = ? WHERE id = ?", (steps, str(e.originator_id)))

    @handles(Environment.Renamed)
    def _environment_renamed(self, e: Environment.Renamed, position: int, cur: Cursor) -> None:
        # Steps scoped to it show its new name, as runs from now on will use it.
        env_id = str(e.originator_id)
        cur.execute("SELECT id, steps FROM rm_projects WHERE steps LIKE ?", (f"%{env_id}%",))
        for project_id, text in cur.fetchall():
            steps = orjson.loads(text)
            changed = False
            for step in steps:
                ids = step.get("environment_ids") or []
                if env_id in ids:
                    current = list(current_environment_names(ids, step["environments"], {env_id: e.name}))
                    changed |= current != step["environments"]
                    step["environments"] = current
            if changed:  # the LIKE also matches an id that only appears in a script
                cur.execute("UPDATE rm_projects SET steps = ? WHERE id = ?",
                            (orjson.dumps(steps).decode(), project_id))

    @handles(Project.Deleted)
    def _deleted(self, e: Project.Deleted, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_projects WHERE id = ?", (str(e.originator_id),))


def _project(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0], "name": row[1], "description": row[2], "steps": orjson.loads(row[3]),
        "created": row[4],
    }


def list_projects(
    db: Database, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Projects by name; and how many there are."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM rm_projects")
        total = cur.fetchone()[0]
        sql, params = page(
            "SELECT id, name, description, steps, created FROM rm_projects "
            "ORDER BY lower(name), id", skip, take,
        )
        cur.execute(sql, params)
        return [_project(r) for r in cur.fetchall()], total


def get_project(db: Database, project_id: str) -> dict[str, Any] | None:
    """One project, or None."""
    with db.read() as cur:
        cur.execute(
            "SELECT id, name, description, steps, created FROM rm_projects WHERE id = ?",
            (project_id,),
        )
        row = cur.fetchone()
        return None if row is None else _project(row)
