"""A task's log: batches of lines, so a chatty step writes a few events, not one a line."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate

_NAMESPACE = uuid5(NAMESPACE_URL, "https://shoal.dev/task-logs")

# One line: [ISO timestamp, stream ("stdout", "stderr", "system"), text]. Plain lists keep
# the encoding cheap for large batches.
Line = list[str]


def log_id(task_id: UUID) -> UUID:
    """The id of a task's log."""
    return uuid5(_NAMESPACE, str(task_id))


class TaskLog(ShoalAggregate):
    """The lines a task's steps wrote."""

    class Opened(ShoalAggregate.Created):
        task_id: UUID

    class LinesAppended(ShoalAggregate.Event):
        task_id: UUID
        step: str
        lines: list[Line]

    @staticmethod
    def create_id(task_id: UUID, actor: Actor) -> UUID:
        """Derived from the task, so the log is found without an index."""
        return log_id(task_id)

    @event(Opened)
    def __init__(self, task_id: UUID, actor: Actor) -> None:
        self.task_id = task_id
        self.line_count = 0
        self.is_deleted = False

    def append(self, step: str, lines: list[Line], actor: Actor) -> None:
        """Add a batch of lines of one step."""
        if lines:
            self._append(task_id=self.task_id, step=step, lines=lines, actor=actor)

    @event(LinesAppended)
    def _append(self, task_id: UUID, step: str, lines: list[Line], actor: Actor) -> None:
        self.line_count += len(lines)


def is_log_event(event: Any) -> bool:
    """Log batches are data, not changes anyone made: the audit log leaves them out."""
    return isinstance(event, TaskLog.Opened | TaskLog.LinesAppended)
