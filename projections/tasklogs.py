"""Task logs: the lines steps printed, with the server's own lines about each step."""

from __future__ import annotations

from typing import Any

from domain.tasklog import TaskLog
from domain.tasks import Task
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database


class TaskLogs(Projection):
    """One row per log line, ordered by (position, idx) within a task."""

    name = "task_logs"
    tables = {  # noqa: RUF012
        "rm_task_log": (
            "task_id TEXT NOT NULL, position BIGINT NOT NULL, idx INTEGER NOT NULL, "
            "step TEXT NOT NULL, at TEXT NOT NULL, stream TEXT NOT NULL, text TEXT NOT NULL, "
            "PRIMARY KEY (task_id, position, idx)"
        )
    }

    def _system(self, cur: Cursor, e: Any, position: int, step: str, text: str) -> None:
        cur.execute(
            "INSERT INTO rm_task_log VALUES (?, ?, 0, ?, ?, 'system', ?)",
            (str(e.originator_id), position, step, iso(e.timestamp), text),
        )

    @handles(TaskLog.LinesAppended)
    def _lines(self, e: TaskLog.LinesAppended, position: int, cur: Cursor) -> None:
        # idx 0 is taken by system lines of Task events; a batch has its own position.
        cur.executemany(
            "INSERT INTO rm_task_log VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(str(e.task_id), position, i, e.step, at, stream, text)
             for i, (at, stream, text) in enumerate(e.lines)],
        )

    @handles(Task.Queued)
    def _queued(self, e: Task.Queued, position: int, cur: Cursor) -> None:
        into = getattr(e, "environment_name", None)  # absent from tasks queued before
        where = f" into environment {into}" if into else ""
        self._system(cur, e, position, "", f"Task queued by {e.actor.name}{where}")

    @handles(Task.Started)
    def _started(self, e: Task.Started, position: int, cur: Cursor) -> None:
        self._system(cur, e, position, "", f"Task started on node {e.node}")

    @handles(Task.StepWaiting)
    def _waiting(self, e: Task.StepWaiting, position: int, cur: Cursor) -> None:
        self._system(cur, e, position, e.step, e.reason)

    @handles(Task.ExecutionsPlanned)
    def _planned(self, e: Task.ExecutionsPlanned, position: int, cur: Cursor) -> None:
        names = ", ".join(x.target_name for x in e.executions)
        count = len(e.executions)
        self._system(cur, e, position, e.step,
                     f"Running on behalf of {count} target{'s' if count != 1 else ''}: {names}")

    @handles(Task.StepAssigned)
    def _assigned(self, e: Task.StepAssigned, position: int, cur: Cursor) -> None:
        self._system(cur, e, position, e.step, f"Running on {e.worker_name}")

    @handles(Task.InterventionRequested)
    def _intervention(self, e: Task.InterventionRequested, position: int, cur: Cursor) -> None:
        text = "Waiting for a manual intervention" + (f": {e.instructions}" if e.instructions else "")
        self._system(cur, e, position, e.step, text)

    @handles(Task.InterventionDecided)
    def _decided(self, e: Task.InterventionDecided, position: int, cur: Cursor) -> None:
        verdict = "Approved" if e.approved else "Rejected"
        self._system(cur, e, position, e.step,
                     f"{verdict} by {e.actor.name}" + (f": {e.note}" if e.note else ""))

    @handles(Task.StepFinished)
    def _step_finished(self, e: Task.StepFinished, position: int, cur: Cursor) -> None:
        text = f"Step {e.outcome.value}" + (f": {e.reason}" if e.reason else "")
        self._system(cur, e, position, e.step, text)

    @handles(Task.CancelRequested)
    def _cancel(self, e: Task.CancelRequested, position: int, cur: Cursor) -> None:
        self._system(cur, e, position, "", f"Cancellation requested by {e.actor.name}")

    @handles(Task.Finished)
    def _finished(self, e: Task.Finished, position: int, cur: Cursor) -> None:
        self._system(cur, e, position, "", f"Task {e.state.value}")


def read_log(
    db: Database, task_id: str, *, after: tuple[int, int] = (0, -1), limit: int = 5000
) -> list[dict[str, Any]]:
    """Lines of a task after (position, idx), in order."""
    position, idx = after
    with db.read() as cur:
        cur.execute(
            "SELECT position, idx, step, at, stream, text FROM rm_task_log "
            "WHERE task_id = ? AND (position > ? OR (position = ? AND idx > ?)) "
            "ORDER BY position, idx LIMIT ?",
            (task_id, position, position, idx, limit),
        )
        return [
            {"position": r[0], "idx": r[1], "step": r[2], "at": r[3], "stream": r[4], "text": r[5]}
            for r in cur.fetchall()
        ]


def format_line(line: dict[str, Any]) -> str:
    """One line of the plain-text log."""
    step = f" {line['step']} |" if line["step"] else ""
    return f"{line['at']} [{line['stream']}]{step} {line['text']}"
