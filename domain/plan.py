"""Pure rules for running a process: groups of parallel steps, conditions, outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from domain.codec import register_enum
from domain.process import Condition, Start, Step


@register_enum
class StepState(str, Enum):
    """Where one step of a task is."""

    PENDING = "pending"
    WAITING = "waiting"
    ASSIGNED = "assigned"
    RUNNING = "running"
    AWAITING_INTERVENTION = "awaiting_intervention"
    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        """Nothing more will happen to the step."""
        return self in _FINAL_STEP

    @property
    def is_failure(self) -> bool:
        """The step went wrong (a skip is not a failure)."""
        return self in (StepState.FAILED, StepState.TIMED_OUT, StepState.CANCELLED)


_FINAL_STEP = frozenset(
    {StepState.SUCCESS, StepState.FAILED, StepState.TIMED_OUT, StepState.CANCELLED, StepState.SKIPPED}
)


@register_enum
class TaskState(str, Enum):
    """Where a task is."""

    QUEUED = "queued"
    EXECUTING = "executing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        """The task has ended."""
        return self not in (TaskState.QUEUED, TaskState.EXECUTING)


def groups(steps: Sequence[Step]) -> list[list[int]]:
    """Indexes of steps that start together: a with_previous step joins the group of
    the step before it. Groups run one after another."""
    out: list[list[int]] = []
    for i, step in enumerate(steps):
        if out and step.start is Start.WITH_PREVIOUS:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def should_run(condition: Condition, failed_before: bool) -> bool:
    """Whether a step with ``condition`` runs, given whether anything failed before it."""
    if condition is Condition.ALWAYS:
        return True
    if condition is Condition.FAILURE:
        return failed_before
    return not failed_before


def skip_reason(condition: Condition) -> str:
    """What the log says about a step its condition skipped."""
    if condition is Condition.FAILURE:
        return "it runs only when an earlier step failed, and none did"
    return "an earlier step failed"


def task_outcome(states: Sequence[StepState], cancelled: bool) -> TaskState:
    """How a task ended, from its steps' final states."""
    if cancelled:
        return TaskState.CANCELLED
    if any(s in (StepState.FAILED, StepState.CANCELLED) for s in states):
        return TaskState.FAILED
    if any(s is StepState.TIMED_OUT for s in states):
        return TaskState.TIMED_OUT
    return TaskState.SUCCESS
