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

    class Cut(ShoalAggregate.Event):
        """A worker sent more of a step's log than the server keeps: the rest is dropped."""

        task_id: UUID
        step: str
        limit: int

    @staticmethod
    def create_id(task_id: UUID, actor: Actor) -> UUID:
        """Derived from the task, so the log is found without an index."""
        return log_id(task_id)

    @event(Opened)
    def __init__(self, task_id: UUID, actor: Actor) -> None:
        self.task_id = task_id
        self.line_count = 0
        self.is_deleted = False
        self.step_chars: dict[str, int] = {}  # characters kept by step (see line_size)
        self.cut_steps: set[str] = set()

    def append(self, step: str, lines: list[Line], actor: Actor) -> None:
        """Add a batch of lines of one step."""
        if lines:
            self._append(task_id=self.task_id, step=step, lines=lines, actor=actor)

    def append_within(self, step: str, lines: list[Line], limit: int, actor: Actor) -> None:
        """Add a batch a worker sent, keeping the step's log within ``limit`` characters
        (line_size): what does not fit is dropped, and the first time that happens a
        system line says so and the step's log is cut for good. The worker keeps its own
        limit; this holds one that does not (a bug, or a hostile machine) from filling
        the server's disk."""
        if step in self.cut_steps:
            return
        kept, fits = within_limit(lines, self.step_chars.get(step, 0), limit)
        self.append(step, kept, actor)
        if not fits:
            at = self.Cut.create_timestamp().isoformat(timespec="milliseconds")
            self.append(step, [[at, "system", cut_notice(limit)]], actor)
            self._cut(task_id=self.task_id, step=step, limit=limit, actor=actor)

    @event(LinesAppended)
    def _append(self, task_id: UUID, step: str, lines: list[Line], actor: Actor) -> None:
        self.line_count += len(lines)
        self.step_chars[step] = self.step_chars.get(step, 0) + sum(map(line_size, lines))

    @event(Cut)
    def _cut(self, task_id: UUID, step: str, limit: int, actor: Actor) -> None:
        self.cut_steps.add(step)


def line_size(line: Line) -> int:
    """What a line counts against a step's log limit: its text and its newline, as the
    agent counts the bytes it read (so empty lines are not free)."""
    return len(line[2]) + 1


def within_limit(lines: list[Line], used: int, limit: int) -> tuple[list[Line], bool]:
    """The leading lines of a batch that fit in what is left of ``limit`` after ``used``
    (line_size), and whether the whole batch fit."""
    room = limit - used
    for i, line in enumerate(lines):
        room -= line_size(line)
        if room < 0:
            return lines[:i], False
    return lines, True


def cut_notice(limit: int) -> str:
    """The system line that ends a log the server cut."""
    return (f"[log cut by the server: the worker sent more than {limit:,} characters of log for "
            "this step; the rest was dropped]")


def is_log_event(event: Any) -> bool:
    """Log batches are data, not changes anyone made: the audit log leaves them out (a
    cut log is audited: it says a worker sent more than it should have)."""
    return isinstance(event, TaskLog.Opened | TaskLog.LinesAppended)
