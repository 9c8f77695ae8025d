"""Reports from workers about the steps they run, and the rule that decides whether one
is accepted: only from the worker the step is assigned to, only for the current
assignment (its fencing token), and only while the step has not ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.tasklog import Line
from domain.tasks import StepRun


@dataclass(frozen=True)
class StepReport:
    """One report as the domain sees it (decoded and checked for shape by the adapter)."""

    step: str
    assignment: int
    kind: str  # started | log | artifact | finished
    pid: int | None = None
    lines: tuple[Line, ...] = ()
    outcome: str | None = None
    exit_code: int | None = None
    reason: str = ""
    # kind "artifact": a file whose bytes the adapter has checked and stored already.
    name: str = ""
    size: int = 0
    sha256: str = ""
    # kind "started": when the process began, by the worker's clock (None: not said).
    started_at: datetime | None = None


def refusal(run: StepRun | None, worker_id: UUID, assignment: int) -> str | None:
    """Why a report from ``worker_id`` quoting ``assignment`` must be refused; None when it
    is accepted."""
    if run is None:
        return "the task has no such step"
    if run.worker_id != worker_id:
        return "the step is not assigned to this worker"
    if run.assignment != assignment:
        return f"stale assignment {assignment} (current: {run.assignment})"
    if run.state.is_final:
        return f"the step already ended ({run.state.value})"
    return None
