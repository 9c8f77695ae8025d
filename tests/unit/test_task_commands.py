"""Task commands through the Application: queueing, cancelling, interventions, logs."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.actors import SYSTEM
from domain.app import Shoal
from domain.certificates import StoredCertificate, parse_pem
from domain.errors import InvalidTransition, NotFound, Rejected
from domain.plan import StepState, TaskState
from domain.process import Action, Step, Syntax
from domain.tasklog import TaskLog, log_id
from domain.tasks import TaskKind
from tests.unit.support import ALICE, BOB, events_after, head, notifications_after, replay, writes_nothing
from tests.unit.test_certificates import self_signed_with_key

SCRIPT = Step(name="Build", action=Action.SCRIPT, syntax=Syntax.SH, script_body="make")
MANUAL = Step(name="Approve", action=Action.MANUAL_INTERVENTION, instructions="check")


def script_task(app: Shoal) -> UUID:
    return app.queue_script(syntax=Syntax.BASH, script_body="echo hi", actor=ALICE).aggregate.id


def project_with(app: Shoal, *steps: Step) -> UUID:
    project_id = app.create_project(name="Web", actor=ALICE).aggregate.id
    if steps:
        app.set_process(project_id, steps=steps, actor=ALICE)
    return project_id


def test_queue_script_queues_one_script_step(app: Shoal) -> None:
    saved = app.queue_script(syntax=Syntax.PYTHON, script_body="print(1)", timeout_s=30, actor=ALICE)

    task = app.get_task(saved.aggregate.id)
    (step,) = task.steps
    assert (task.kind, task.state, task.project_id) == (TaskKind.SCRIPT, TaskState.QUEUED, None)
    assert (step.action, step.syntax, step.script_body, step.timeout_s) == (
        Action.SCRIPT, Syntax.PYTHON, "print(1)", 30)


def test_queue_script_keeps_a_named_pool(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    saved = app.queue_script(syntax=Syntax.SH, script_body="true", worker_pool_id=pool_id, actor=ALICE)

    assert app.get_task(saved.aggregate.id).steps[0].worker_pool_id == pool_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"script_body": ""}, "must not be empty"),
        ({"script_body": "  \n"}, "must not be empty"),
        ({"worker_pool_id": UUID(int=99)}, "does not exist"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
        ({"timeout_s": -1}, "timeout_s must be positive"),
    ],
    ids=["empty-body", "blank-body", "unknown-pool", "zero-timeout", "negative-timeout"],
)
def test_queue_script_rejects_bad_input_and_writes_nothing(app: Shoal, kwargs: dict[str, Any],
                                                          message: str) -> None:
    arguments = {"syntax": Syntax.BASH, "script_body": "echo", **kwargs}

    with writes_nothing(app), pytest.raises(Rejected, match=message):
        app.queue_script(**arguments, actor=ALICE)


def test_queue_run_copies_the_project_process(app: Shoal) -> None:
    project_id = project_with(app, SCRIPT, MANUAL)

    task = app.queue_run(project_id, actor=ALICE).aggregate

    assert (task.kind, task.project_id, task.steps) == (TaskKind.DEPLOYMENT, project_id, (SCRIPT, MANUAL))


def test_queue_run_of_a_project_without_steps_is_rejected(app: Shoal) -> None:
    project_id = project_with(app)

    with writes_nothing(app), pytest.raises(Rejected, match="has no steps"):
        app.queue_run(project_id, actor=ALICE)


def test_set_process_with_a_missing_pool_is_rejected(app: Shoal) -> None:
    project_id = project_with(app)
    missing = uuid4()
    step = Step(name="Build", action=Action.SCRIPT, worker_pool_id=missing, syntax=Syntax.SH, script_body="x")

    with writes_nothing(app), pytest.raises(Rejected, match=f"'Build': worker pool {missing} does not exist"):
        app.set_process(project_id, steps=(step,), actor=ALICE)


def test_cancelling_a_queued_task_ends_it_at_once(app: Shoal) -> None:
    task_id = script_task(app)
    before = head(app)

    app.cancel_task(task_id, actor=BOB)

    assert replay(app, task_id).state is TaskState.CANCELLED
    assert [type(e).__name__ for e in events_after(app, before)] == ["CancelRequested", "Finished"]


def test_cancelling_a_running_task_only_asks(app: Shoal) -> None:
    task_id = script_task(app)
    app.update_task(task_id, lambda t: t.start("node-1", SYSTEM))

    app.cancel_task(task_id, actor=BOB)

    task = replay(app, task_id)
    assert (task.state, task.cancel_requested) == (TaskState.EXECUTING, True)


def test_cancelling_an_ended_task_is_refused(app: Shoal) -> None:
    task_id = script_task(app)
    app.cancel_task(task_id, actor=BOB)

    with writes_nothing(app), pytest.raises(InvalidTransition, match="already ended"):
        app.cancel_task(task_id, actor=BOB)


def test_deciding_a_step_that_is_not_waiting_is_refused(app: Shoal) -> None:
    task_id = app.queue_run(project_with(app, MANUAL), actor=ALICE).aggregate.id
    app.update_task(task_id, lambda t: t.start("node-1", SYSTEM))

    with writes_nothing(app), pytest.raises(InvalidTransition, match="not waiting for an intervention"):
        app.decide_intervention(task_id, "Approve", approved=True, note="", actor=BOB)


def test_deciding_a_waiting_intervention_ends_the_step(app: Shoal) -> None:
    task_id = app.queue_run(project_with(app, MANUAL), actor=ALICE).aggregate.id
    app.update_task(task_id, lambda t: (t.start("n", SYSTEM), t.request_intervention("Approve", "x", SYSTEM)))

    app.decide_intervention(task_id, "Approve", approved=False, note="not today", actor=BOB)

    run = replay(app, task_id).runs["Approve"]
    assert (run.state, run.reason) == (StepState.FAILED, "rejected by Bob's key: not today")


def test_update_known_task_with_a_stale_copy_loses_no_update(app: Shoal) -> None:
    task_id = script_task(app)
    known = app.update_task(task_id, lambda t: t.start("node-1", SYSTEM)).aggregate
    app.cancel_task(task_id, actor=BOB)  # someone else writes meanwhile

    saved = app.update_known_task(known, task_id, lambda t: t.assign("Run script", None, None, "bi", SYSTEM))

    stored = replay(app, task_id)
    assert stored.cancel_requested is True
    assert stored.runs["Run script"].state is StepState.ASSIGNED
    assert saved.aggregate.version == stored.version


def test_update_known_task_with_a_current_copy_saves_the_change(app: Shoal) -> None:
    task_id = script_task(app)
    known = app.update_task(task_id, lambda t: t.start("node-1", SYSTEM)).aggregate

    app.update_known_task(known, task_id, lambda t: t.wait_for_worker("Run script", "busy", SYSTEM))

    assert replay(app, task_id).runs["Run script"].reason == "busy"


def test_update_known_task_does_not_change_the_known_copy(app: Shoal) -> None:
    task_id = script_task(app)
    known = app.update_task(task_id, lambda t: t.start("node-1", SYSTEM)).aggregate

    app.update_known_task(known, task_id, lambda t: t.wait_for_worker("Run script", "busy", SYSTEM))

    assert known.runs["Run script"].state is StepState.PENDING


LINE = ["2025-01-01T00:00:00Z", "stdout", "hello"]


def test_the_first_log_append_opens_the_log(app: Shoal) -> None:
    task_id = script_task(app)
    before = head(app)

    app.append_log(task_id, "Run script", [LINE], actor=SYSTEM)

    opened, appended = events_after(app, before)
    assert isinstance(opened, TaskLog.Opened)
    assert opened.originator_id == log_id(task_id)
    assert (appended.task_id, appended.step, appended.lines) == (task_id, "Run script", [LINE])


def test_later_log_appends_add_one_event_a_batch(app: Shoal) -> None:
    task_id = script_task(app)
    app.append_log(task_id, "Run script", [LINE], actor=SYSTEM)
    before = head(app)

    app.append_log(task_id, "Run script", [LINE, LINE], actor=SYSTEM)

    (appended,) = events_after(app, before)
    assert isinstance(appended, TaskLog.LinesAppended)
    assert (appended.task_id, appended.lines) == (task_id, [LINE, LINE])
    assert replay(app, log_id(task_id)).line_count == 3


def test_an_empty_batch_writes_no_lines(app: Shoal) -> None:
    task_id = script_task(app)
    app.append_log(task_id, "Run script", [LINE], actor=SYSTEM)

    with writes_nothing(app):
        app.append_log(task_id, "Run script", [], actor=SYSTEM)


def test_append_log_returns_the_position_of_the_batch(app: Shoal) -> None:
    task_id = script_task(app)

    position = app.append_log(task_id, "Run script", [LINE], actor=SYSTEM)

    assert position == head(app)


def test_store_certificate_keeps_public_parts_only(app: Shoal) -> None:
    parsed = parse_pem(self_signed_with_key())
    before = head(app)

    saved = app.store_certificate("web", parsed, actor=ALICE)

    stored = app.aggregate_state(saved.aggregate.id)
    assert isinstance(stored, StoredCertificate)
    assert (stored.name, stored.thumbprint) == ("web", parsed.thumbprint)
    written = b"".join(n.state for n in notifications_after(app, before))
    assert b"PRIVATE KEY" not in written
    assert parsed.certificates_pem.splitlines()[1].encode() in written


def test_task_events_are_stored_with_their_actor(app: Shoal) -> None:
    before = head(app)

    task_id = script_task(app)
    app.cancel_task(task_id, actor=BOB)

    assert [e.actor for e in events_after(app, before) if e.originator_id == task_id] == [ALICE, BOB, BOB]


def test_get_task_of_another_aggregate_is_not_found(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.get_task(app.default_pool_id())
