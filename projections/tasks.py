"""Task list: every task with its per-step state, for the API and the dispatcher's queue."""

from __future__ import annotations

from typing import Any

from domain.plan import StepState, TaskState
from domain.tasks import Task
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class TaskList(Projection):
    """One row per task and one per step of it."""

    name = "tasks"
    version = 3
    tables = {  # noqa: RUF012
        "rm_tasks": (
            "id TEXT PRIMARY KEY, queued_at BIGINT NOT NULL, kind TEXT NOT NULL, "
            "name TEXT NOT NULL, project_id TEXT, state TEXT NOT NULL, node TEXT, "
            "created TEXT NOT NULL, started TEXT, finished TEXT, queued_by TEXT NOT NULL, "
            "environment_id TEXT, environment TEXT"
        ),
        "rm_task_steps": (
            "task_id TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, "
            "action TEXT NOT NULL, state TEXT NOT NULL, worker_id TEXT, worker_name TEXT, "
            "exit_code INTEGER, reason TEXT NOT NULL, started TEXT, finished TEXT, "
            "PRIMARY KEY (task_id, idx)"
        ),
        # A step run on behalf of roles: one row per target it ran for.
        "rm_task_executions": (
            "task_id TEXT NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL, "
            "key TEXT NOT NULL, target_id TEXT NOT NULL, target_name TEXT NOT NULL, "
            "queued_at BIGINT NOT NULL, state TEXT NOT NULL, worker_id TEXT, worker_name TEXT, "
            "exit_code INTEGER, reason TEXT NOT NULL, started TEXT, finished TEXT, "
            "PRIMARY KEY (task_id, key)"
        ),
    }
    indexes = (
        "CREATE INDEX IF NOT EXISTS rm_task_executions_target "
        "ON rm_task_executions (target_id, queued_at)",
        "CREATE INDEX IF NOT EXISTS rm_tasks_state ON rm_tasks (state, queued_at)",
        "CREATE INDEX IF NOT EXISTS rm_tasks_project ON rm_tasks (project_id, queued_at)",
    )

    @handles(Task.Queued)
    def _queued(self, e: Task.Queued, position: int, cur: Cursor) -> None:
        task_id = str(e.originator_id)
        cur.execute(
            "INSERT INTO rm_tasks VALUES (?, ?, ?, ?, ?, 'queued', NULL, ?, NULL, NULL, ?, ?, ?)",
            (task_id, position, e.kind.value, e.name,
             str(e.project_id) if e.project_id else None, iso(e.timestamp), e.actor.name,
             # Tasks queued before runs had environments have neither attribute.
             str(e.environment_id) if getattr(e, "environment_id", None) else None,
             getattr(e, "environment_name", None)),
        )
        cur.executemany(
            "INSERT INTO rm_task_steps VALUES (?, ?, ?, ?, 'pending', NULL, NULL, NULL, '', "
            "NULL, NULL)",
            [(task_id, i, s.name, s.action.value) for i, s in enumerate(e.steps)],
        )

    @handles(Task.Started)
    def _started(self, e: Task.Started, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_tasks SET state = 'executing', node = ?, started = ? WHERE id = ?",
            (e.node, iso(e.timestamp), str(e.originator_id)),
        )

    def _step(self, cur: Cursor, e: Any, **values: Any) -> None:
        """Change the step, or the execution on behalf of a target, that ``e.step``
        names (execution keys are never step names)."""
        columns = ", ".join(f"{k} = ?" for k in values)
        params = (*values.values(), str(e.originator_id), e.step)
        cur.execute(f"UPDATE rm_task_steps SET {columns} WHERE task_id = ? AND name = ?", params)
        if cur.rowcount == 0:
            cur.execute(
                f"UPDATE rm_task_executions SET {columns} WHERE task_id = ? AND key = ?", params
            )

    @handles(Task.ExecutionsPlanned)
    def _planned(self, e: Task.ExecutionsPlanned, position: int, cur: Cursor) -> None:
        task_id = str(e.originator_id)
        self._step(cur, e, state=StepState.RUNNING.value, reason="", started=iso(e.timestamp))
        cur.executemany(
            "INSERT INTO rm_task_executions VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', NULL, NULL, "
            "NULL, '', NULL, NULL)",
            [(task_id, e.step, i, x.key, str(x.target_id), x.target_name, position)
             for i, x in enumerate(e.executions)],
        )

    @handles(Task.StepWaiting)
    def _waiting(self, e: Task.StepWaiting, position: int, cur: Cursor) -> None:
        self._step(cur, e, state=StepState.WAITING.value, reason=e.reason)

    @handles(Task.StepRequeued)
    def _requeued(self, e: Task.StepRequeued, position: int, cur: Cursor) -> None:
        self._step(cur, e, state=StepState.WAITING.value, reason=e.reason, worker_id=None,
                   worker_name=None)

    @handles(Task.StepAssigned)
    def _assigned(self, e: Task.StepAssigned, position: int, cur: Cursor) -> None:
        self._step(
            cur, e, state=StepState.ASSIGNED.value, reason="",
            worker_id=str(e.worker_id) if e.worker_id else None, worker_name=e.worker_name,
        )

    @handles(Task.StepStarted)
    def _step_started(self, e: Task.StepStarted, position: int, cur: Cursor) -> None:
        self._step(cur, e, state=StepState.RUNNING.value, started=iso(e.timestamp))

    @handles(Task.InterventionRequested)
    def _intervention(self, e: Task.InterventionRequested, position: int, cur: Cursor) -> None:
        self._step(cur, e, state=StepState.AWAITING_INTERVENTION.value, started=iso(e.timestamp))

    @handles(Task.InterventionDecided)
    def _decided(self, e: Task.InterventionDecided, position: int, cur: Cursor) -> None:
        verdict = "approved" if e.approved else "rejected"
        self._step(
            cur, e,
            state=(StepState.SUCCESS if e.approved else StepState.FAILED).value,
            reason=f"{verdict} by {e.actor.name}" + (f": {e.note}" if e.note else ""),
            finished=iso(e.timestamp),
        )

    @handles(Task.StepFinished)
    def _step_finished(self, e: Task.StepFinished, position: int, cur: Cursor) -> None:
        self._step(
            cur, e, state=e.outcome.value, exit_code=e.exit_code, reason=e.reason,
            finished=iso(e.timestamp),
        )
        # Steps that run inside the server have no separate start: they start and end
        # here. A skipped step never started.
        if e.outcome is not StepState.SKIPPED:
            for table, column in (("rm_task_steps", "name"), ("rm_task_executions", "key")):
                cur.execute(
                    f"UPDATE {table} SET started = finished "
                    f"WHERE task_id = ? AND {column} = ? AND started IS NULL",
                    (str(e.originator_id), e.step),
                )

    @handles(Task.Finished)
    def _finished(self, e: Task.Finished, position: int, cur: Cursor) -> None:
        cur.execute(
            "UPDATE rm_tasks SET state = ?, finished = ? WHERE id = ?",
            (e.state.value, iso(e.timestamp), str(e.originator_id)),
        )
        # As the aggregate does: steps never reached end as skipped.
        reason = "task cancelled" if e.state is TaskState.CANCELLED else "task ended"
        for table in ("rm_task_steps", "rm_task_executions"):
            cur.execute(
                f"UPDATE {table} SET state = 'skipped', reason = ?, finished = ? "
                f"WHERE task_id = ? AND state NOT IN ({_FINAL})",
                (reason, iso(e.timestamp), str(e.originator_id)),
            )


_FINAL = ", ".join(f"'{s.value}'" for s in StepState if s.is_final)
_TASK = (
    "id, kind, name, project_id, state, node, created, started, finished, queued_by, "
    "environment_id, environment"
)
_STEP = "name, action, state, worker_id, worker_name, exit_code, reason, started, finished"
_EXECUTION = (
    "target_id, target_name, state, worker_id, worker_name, exit_code, reason, started, finished"
)


def _steps(cur: Cursor, task_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in task_ids}
    if not task_ids:
        return out
    marks = ", ".join("?" for _ in task_ids)
    cur.execute(
        f"SELECT task_id, {_STEP} FROM rm_task_steps WHERE task_id IN ({marks}) ORDER BY idx",
        task_ids,
    )
    keys = [k.strip() for k in _STEP.split(",")]
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for row in cur.fetchall():
        step = dict(zip(keys, row[1:], strict=True), executions=[])
        out[row[0]].append(step)
        by_name[(row[0], step["name"])] = step
    cur.execute(
        f"SELECT task_id, step, {_EXECUTION} FROM rm_task_executions "
        f"WHERE task_id IN ({marks}) ORDER BY idx",
        task_ids,
    )
    keys = [k.strip() for k in _EXECUTION.split(",")]
    for row in cur.fetchall():
        parent = by_name.get((row[0], row[1]))
        if parent is not None:
            parent["executions"].append(dict(zip(keys, row[2:], strict=True)))
    return out


def target_runs(
    db: Database, target_id: str, *, skip: int = 0, take: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """The executions that ran on behalf of a target, newest first, with their task;
    and how many there are."""
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM rm_task_executions WHERE target_id = ?", (target_id,))
        total = cur.fetchone()[0]
        sql, paging = page(
            "SELECT x.task_id, t.name, t.state, t.environment, x.step, x.state, x.worker_id, "
            "x.worker_name, x.exit_code, x.started, x.finished "
            "FROM rm_task_executions x JOIN rm_tasks t ON t.id = x.task_id "
            "WHERE x.target_id = ? ORDER BY x.queued_at DESC, x.idx",
            skip, take,
        )
        cur.execute(sql, (target_id, *paging))
        keys = ("task_id", "task_name", "task_state", "environment", "step", "state",
                "worker_id", "worker_name", "exit_code", "started", "finished")
        return [dict(zip(keys, r, strict=True)) for r in cur.fetchall()], total


def _tasks(cur: Cursor, rows: list[Any]) -> list[dict[str, Any]]:
    keys = [k.strip() for k in _TASK.split(",")]
    tasks = [dict(zip(keys, r, strict=True)) for r in rows]
    steps = _steps(cur, [t["id"] for t in tasks])
    for task in tasks:
        task["steps"] = steps[task["id"]]
    return tasks


def list_tasks(
    db: Database,
    *,
    state: str | None = None,
    project_id: str | None = None,
    skip: int = 0,
    take: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """Tasks, newest first, filtered by state and project; and how many match."""
    where, params = [], []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if project_id is not None:
        where.append("project_id = ?")
        params.append(project_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with db.read() as cur:
        cur.execute(f"SELECT COUNT(*) FROM rm_tasks{clause}", params)
        total = cur.fetchone()[0]
        sql, paging = page(f"SELECT {_TASK} FROM rm_tasks{clause} ORDER BY queued_at DESC", skip, take)
        cur.execute(sql, (*params, *paging))
        return _tasks(cur, cur.fetchall()), total


def get_task(db: Database, task_id: str) -> dict[str, Any] | None:
    """One task with its steps, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_TASK} FROM rm_tasks WHERE id = ?", (task_id,))
        row = cur.fetchone()
        return None if row is None else _tasks(cur, [row])[0]


def queued_task_ids(db: Database, limit: int) -> list[str]:
    """The oldest queued tasks, in the order they were queued."""
    with db.read() as cur:
        cur.execute(
            "SELECT id FROM rm_tasks WHERE state = ? ORDER BY queued_at LIMIT ?",
            (TaskState.QUEUED.value, limit),
        )
        return [r[0] for r in cur.fetchall()]


def executing_task_ids(db: Database, node: str) -> list[str]:
    """Tasks a node had started and not finished (to recover after a restart)."""
    with db.read() as cur:
        cur.execute(
            "SELECT id FROM rm_tasks WHERE state = ? AND node = ? ORDER BY queued_at",
            (TaskState.EXECUTING.value, node),
        )
        return [r[0] for r in cur.fetchall()]
