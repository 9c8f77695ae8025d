"""When a step started: the moment its runner reports, when it is on the server's clock,
but never before the task's last event nor later than now."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.actors import SYSTEM
from domain.process import Action, Step, Syntax
from domain.tasks import Task, TaskKind
from tests.unit.support import ALICE

STEP = Step(name="Build", action=Action.SCRIPT, syntax=Syntax.SH, script_body="make")


def assigned() -> Task:
    task = Task(kind=TaskKind.SCRIPT, name="t", project_id=None, steps=(STEP,), actor=ALICE)
    task.start("n1", SYSTEM)
    task.assign("Build", UUID(int=1), None, "built-in worker", SYSTEM)
    return task


def started_at(task: Task) -> datetime:
    event = task.collect_events()[-1]
    assert isinstance(event, Task.StepStarted)
    return event.timestamp


def test_the_reported_moment_is_the_steps_start() -> None:
    task = assigned()
    time.sleep(0.002)
    at = task.modified_on + (datetime.now(UTC) - task.modified_on) / 2
    task.mark_started("Build", 42, SYSTEM, at)
    assert started_at(task) == at


def test_without_a_moment_the_start_is_when_it_is_recorded() -> None:
    task = assigned()
    before = datetime.now(UTC)
    task.mark_started("Build", 42, SYSTEM)
    assert before <= started_at(task) <= datetime.now(UTC)


def test_a_moment_before_the_assignment_counts_as_the_assignment() -> None:
    task = assigned()
    assignment = task.modified_on
    task.mark_started("Build", 42, SYSTEM, assignment - timedelta(seconds=3))
    assert started_at(task) == assignment


def test_a_moment_in_the_future_counts_as_now() -> None:
    task = assigned()
    task.mark_started("Build", 42, SYSTEM, datetime.now(UTC) + timedelta(hours=1))
    assert started_at(task) <= datetime.now(UTC)
