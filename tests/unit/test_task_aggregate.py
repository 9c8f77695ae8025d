"""The Task aggregate as a state machine: legal moves record events, illegal ones raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from domain.actors import SYSTEM
from domain.errors import InvalidTransition
from domain.plan import StepState, TaskState, task_outcome
from domain.process import Action, Start, Step, Syntax
from domain.tasks import Task, TaskKind
from tests.unit.support import ALICE, BOB

POOL = UUID(int=7)
WORKER = UUID(int=8)
SCRIPT = Step(name="Build", action=Action.SCRIPT, syntax=Syntax.SH, script_body="make")
MANUAL = Step(name="Approve", action=Action.MANUAL_INTERVENTION, instructions="check",
              start=Start.WITH_PREVIOUS)


def new_task(*steps: Step, start: bool = False) -> Task:
    """A task whose events so far are already collected (as if saved)."""
    task = Task(kind=TaskKind.DEPLOYMENT, name="Web", project_id=None, steps=steps or (SCRIPT,), actor=ALICE)
    if start:
        task.start("node-1", SYSTEM)
    task.collect_events()
    return task


def started(*steps: Step) -> Task:
    return new_task(*steps, start=True)


def assign(task: Task, step: str = "Build") -> None:
    task.assign(step, POOL, WORKER, "w1", SYSTEM)


def names(task: Task) -> list[str]:
    return [type(e).__name__ for e in task.collect_events()]


def ended() -> Task:
    task = started(SCRIPT, MANUAL)
    task.finish(TaskState.FAILED, SYSTEM)
    task.collect_events()
    return task


def test_a_new_task_is_queued_with_pending_steps() -> None:
    task = new_task(SCRIPT, MANUAL)

    assert task.state is TaskState.QUEUED
    assert [r.state for r in task.runs.values()] == [StepState.PENDING, StepState.PENDING]


def test_the_happy_path_records_each_move() -> None:
    task = new_task()

    task.start("node-1", SYSTEM)
    assign(task)
    task.mark_started("Build", 4242, SYSTEM)
    task.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM)
    task.finish(TaskState.SUCCESS, SYSTEM)

    assert names(task) == ["Started", "StepAssigned", "StepStarted", "StepFinished", "Finished"]
    assert task.state is TaskState.SUCCESS
    run = task.runs["Build"]
    assert (run.state, run.worker_id, run.pool_id, run.pid, run.exit_code) == (
        StepState.SUCCESS, WORKER, POOL, 4242, 0)
    assert task.node == "node-1"


def test_starting_twice_is_refused() -> None:
    task = started()

    with pytest.raises(InvalidTransition, match="not queued"):
        task.start("node-2", SYSTEM)


@pytest.mark.parametrize(
    ("prepare", "state"),
    [
        (lambda t: t.finish_step("Build", StepState.FAILED, 1, "", SYSTEM), "failed"),
        (lambda t: (assign(t), t.mark_started("Build", 1, SYSTEM)), "running"),
    ],
    ids=["finished", "running"],
)
def test_assigning_a_step_that_left_the_queue_is_refused(prepare: Callable[[Task], Any], state: str) -> None:
    task = started()
    prepare(task)

    with pytest.raises(InvalidTransition, match=state):
        assign(task)


@pytest.mark.parametrize(
    "prepare",
    [lambda t: None, lambda t: t.wait_for_worker("Build", "busy", SYSTEM),
     lambda t: (assign(t), t.mark_started("Build", 1, SYSTEM))],
    ids=["pending", "waiting", "already-running"],
)
def test_mark_started_needs_an_assigned_step(prepare: Callable[[Task], None]) -> None:
    task = started()
    prepare(task)

    with pytest.raises(InvalidTransition, match="not assigned"):
        task.mark_started("Build", 1, SYSTEM)


def test_finishing_a_step_twice_is_refused() -> None:
    task = started()
    task.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM)

    with pytest.raises(InvalidTransition, match="already ended"):
        task.finish_step("Build", StepState.FAILED, 1, "", SYSTEM)


@pytest.mark.parametrize("outcome", [s for s in StepState if not s.is_final])
def test_finish_step_needs_a_final_outcome(outcome: StepState) -> None:
    task = started()

    with pytest.raises(InvalidTransition, match="is not an outcome"):
        task.finish_step("Build", outcome, None, "", SYSTEM)


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.EXECUTING])
def test_finish_needs_a_final_state(state: TaskState) -> None:
    task = started()

    with pytest.raises(InvalidTransition, match="not a final state"):
        task.finish(state, SYSTEM)


def test_deciding_a_step_that_is_not_awaiting_is_refused() -> None:
    task = started(SCRIPT, MANUAL)

    with pytest.raises(InvalidTransition, match="not waiting for an intervention"):
        task.decide("Approve", True, "", ALICE)


def test_an_intervention_on_a_script_step_is_refused() -> None:
    task = started(SCRIPT, MANUAL)

    with pytest.raises(InvalidTransition, match="not a manual intervention"):
        task.request_intervention("Build", "look", SYSTEM)


def test_an_unknown_step_is_refused() -> None:
    task = started()

    with pytest.raises(InvalidTransition, match="no step named 'Nope'"):
        assign(task, "Nope")


AFTER_END: dict[str, Callable[[Task], Any]] = {
    "start": lambda t: t.start("n", SYSTEM),
    "wait_for_worker": lambda t: t.wait_for_worker("Build", "busy", SYSTEM),
    "assign": assign,
    "mark_started": lambda t: t.mark_started("Build", 1, SYSTEM),
    "finish_step": lambda t: t.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM),
    "request_intervention": lambda t: t.request_intervention("Approve", "x", SYSTEM),
    "decide": lambda t: t.decide("Approve", True, "", ALICE),
    "request_cancel": lambda t: t.request_cancel(ALICE),
    "finish": lambda t: t.finish(TaskState.SUCCESS, SYSTEM),
}


@pytest.mark.parametrize("command", list(AFTER_END.values()), ids=list(AFTER_END))
def test_no_command_is_accepted_after_the_task_ended(command: Callable[[Task], Any]) -> None:
    task = ended()

    with pytest.raises(InvalidTransition):
        command(task)

    assert task.collect_events() == []


def test_waiting_with_the_same_reason_records_one_event() -> None:
    task = started()

    for _ in range(3):
        task.wait_for_worker("Build", "pool 'Build' has no workers", SYSTEM)

    assert names(task) == ["StepWaiting"]
    assert task.runs["Build"].state is StepState.WAITING


def test_waiting_for_a_new_reason_records_it() -> None:
    task = started()

    task.wait_for_worker("Build", "no workers", SYSTEM)
    task.wait_for_worker("Build", "1 at capacity", SYSTEM)

    assert names(task) == ["StepWaiting", "StepWaiting"]
    assert task.runs["Build"].reason == "1 at capacity"


def test_the_fencing_token_is_the_assignment_event_version() -> None:
    task = started()

    assign(task)

    (assigned,) = task.collect_events()
    assert task.runs["Build"].assignment == assigned.originator_version


def test_reassignment_changes_the_fencing_token() -> None:
    task = started()
    assign(task)
    first = task.runs["Build"].assignment

    task.wait_for_worker("Build", "worker went away", SYSTEM)
    assign(task)

    events = task.collect_events()
    assert task.runs["Build"].assignment == events[-1].originator_version != first


def test_the_fencing_token_survives_replay() -> None:
    task = Task(kind=TaskKind.SCRIPT, name="x", project_id=None, steps=(SCRIPT,), actor=ALICE)
    task.start("n", SYSTEM)
    assign(task)
    replayed: Any = None

    for event in task.collect_events():
        replayed = event.mutate(replayed)

    assert replayed.runs["Build"].assignment == task.runs["Build"].assignment == 3


@pytest.mark.parametrize(("approved", "state", "verb"),
                         [(True, StepState.SUCCESS, "approved"), (False, StepState.FAILED, "rejected")])
def test_an_intervention_decision_ends_the_step(approved: bool, state: StepState, verb: str) -> None:
    task = started(SCRIPT, MANUAL)
    task.request_intervention("Approve", "check", SYSTEM)
    assert task.runs["Approve"].state is StepState.AWAITING_INTERVENTION

    task.decide("Approve", approved, "looks fine", BOB)

    assert task.runs["Approve"].state is state
    assert task.runs["Approve"].reason == f"{verb} by {BOB.name}: looks fine"


def test_deciding_twice_is_refused() -> None:
    task = started(SCRIPT, MANUAL)
    task.request_intervention("Approve", "check", SYSTEM)
    task.decide("Approve", True, "", BOB)

    with pytest.raises(InvalidTransition):
        task.decide("Approve", False, "", ALICE)


def test_request_cancel_is_idempotent() -> None:
    task = started()

    task.request_cancel(ALICE)
    task.request_cancel(BOB)

    assert names(task) == ["CancelRequested"]
    assert task.cancel_requested is True


def test_finish_if_done_waits_for_every_step() -> None:
    task = started(SCRIPT, MANUAL)
    task.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM)
    task.collect_events()

    assert task.finish_if_done(SYSTEM) is False
    assert task.state is TaskState.EXECUTING
    assert task.collect_events() == []


@pytest.mark.parametrize(
    ("first", "second", "cancel"),
    [
        (StepState.SUCCESS, StepState.SUCCESS, False),
        (StepState.SUCCESS, StepState.SKIPPED, False),
        (StepState.FAILED, StepState.SUCCESS, False),
        (StepState.TIMED_OUT, StepState.SKIPPED, False),
        (StepState.CANCELLED, StepState.SKIPPED, True),
    ],
)
def test_finish_if_done_ends_with_the_task_outcome(first: StepState, second: StepState, cancel: bool) -> None:
    task = started(SCRIPT, MANUAL)
    if cancel:
        task.request_cancel(ALICE)
    task.finish_step("Build", first, None, "", SYSTEM)
    task.finish_step("Approve", second, None, "", SYSTEM)

    assert task.finish_if_done(SYSTEM) is True
    assert task.state is task_outcome([first, second], cancel)
    assert names(task)[-1] == "Finished"


def test_finish_if_done_on_an_ended_task_does_nothing() -> None:
    task = started()
    task.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM)
    task.finish(TaskState.FAILED, SYSTEM)
    task.collect_events()

    assert task.finish_if_done(SYSTEM) is False
    assert task.collect_events() == []


def test_every_event_carries_its_actor() -> None:
    task = Task(kind=TaskKind.DEPLOYMENT, name="Web", project_id=None, steps=(SCRIPT, MANUAL), actor=ALICE)
    task.start("n", SYSTEM)
    assign(task)
    task.mark_started("Build", 1, SYSTEM)
    task.finish_step("Build", StepState.SUCCESS, 0, "", SYSTEM)
    task.wait_for_worker("Approve", "x", SYSTEM)
    task.request_intervention("Approve", "check", SYSTEM)
    task.decide("Approve", True, "", BOB)
    task.request_cancel(ALICE)
    task.finish_if_done(SYSTEM)

    got = [(type(e).__name__, e.actor) for e in task.collect_events()]

    assert got == [
        ("Queued", ALICE), ("Started", SYSTEM), ("StepAssigned", SYSTEM), ("StepStarted", SYSTEM),
        ("StepFinished", SYSTEM), ("StepWaiting", SYSTEM), ("InterventionRequested", SYSTEM),
        ("InterventionDecided", BOB), ("CancelRequested", ALICE), ("Finished", SYSTEM),
    ]
