"""Reports from workers: the fencing rule and how accepted reports become Task events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import RecordConflictError

from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.app.tasks import ReportGroup
from domain.plan import StepState, TaskState
from domain.reports import StepReport, refusal
from domain.tasklog import TaskLog, cut_notice, log_id, within_limit
from domain.tasks import StepRun
from tests.helpers import assigned_script_task
from tests.unit.support import ALICE, events_after, head

STEP = "Run script"


def agent(worker_id: UUID) -> Actor:
    return Actor(ActorKind.AGENT, str(worker_id), "w")


@pytest.mark.parametrize(
    ("run", "worker", "token", "expected"),
    [
        (StepRun(StepState.ASSIGNED, worker_id=UUID(int=1), assignment=3), UUID(int=1), 3, None),
        (StepRun(StepState.RUNNING, worker_id=UUID(int=1), assignment=3), UUID(int=1), 3, None),
        (StepRun(StepState.RUNNING, worker_id=UUID(int=1), assignment=3), UUID(int=2), 3,
         "the step is not assigned to this worker"),
        (StepRun(StepState.RUNNING, worker_id=UUID(int=1), assignment=5), UUID(int=1), 3,
         "stale assignment 3 (current: 5)"),
        (StepRun(StepState.SUCCESS, worker_id=UUID(int=1), assignment=3), UUID(int=1), 3,
         "the step already ended (success)"),
        (StepRun(StepState.WAITING, worker_id=None, assignment=None), UUID(int=1), 3,
         "the step is not assigned to this worker"),
        (None, UUID(int=1), 3, "the task has no such step"),
    ],
    ids=["assigned", "running", "other-worker", "stale-token", "ended", "requeued", "no-step"],
)
def test_refusal(run: StepRun | None, worker: UUID, token: int, expected: str | None) -> None:
    assert refusal(run, worker, token) == expected


def test_started_log_finished_become_events_in_one_save_each(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    before = head(app)

    _, refused = app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "started", pid=42),
        StepReport(STEP, token, "log", lines=(["2026-11-22T00:00:00.000+00:00", "stdout", "hi"],)),
        StepReport(STEP, token, "finished", outcome="success", exit_code=0),
    ], actor=agent(worker_id))

    assert refused == []
    task = app.get_task(task_id)
    assert (task.run_of(STEP).state, task.run_of(STEP).exit_code, task.state) == (
        StepState.SUCCESS, 0, TaskState.SUCCESS)
    log = app.repository.get(log_id(task_id))
    assert isinstance(log, TaskLog)
    names = [type(e).__name__ for e in events_after(app, before)]
    assert names == ["Opened", "LinesAppended", "StepStarted", "StepFinished", "Finished"]


def test_reports_from_another_worker_or_old_assignment_change_nothing(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    intruder = uuid4()
    before = head(app)

    position, refused = app.apply_reports(task_id, intruder, [
        StepReport(STEP, token, "finished", outcome="success", exit_code=0)], actor=agent(intruder))
    position2, refused2 = app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token - 1, "finished", outcome="success", exit_code=0)], actor=agent(worker_id))

    assert (position, position2) == (None, None)
    assert "not assigned to this worker" in refused[0]
    assert "stale assignment" in refused2[0]
    assert events_after(app, before) == []
    assert app.get_task(task_id).run_of(STEP).state is StepState.ASSIGNED


def test_a_requeued_step_voids_the_old_token(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    app.update_task(task_id, lambda t: t.requeue(STEP, "worker lost", ALICE))

    _, refused = app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "started", pid=1)], actor=agent(worker_id))

    run = app.get_task(task_id).run_of(STEP)
    assert (run.state, run.worker_id, run.assignment) == (StepState.WAITING, None, None)
    assert refused and "not assigned" in refused[0]


def test_a_log_without_its_started_report_still_marks_the_step_running(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)

    app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "log", lines=(["t", "stdout", "x"],))], actor=agent(worker_id))

    assert app.get_task(task_id).run_of(STEP).state is StepState.RUNNING


def test_requeue_needs_an_assigned_step(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    app.apply_reports(task_id, worker_id, [StepReport(STEP, token, "started", pid=1)],
                      actor=agent(worker_id))

    with pytest.raises(Exception, match="not assigned"):
        app.update_task(task_id, lambda t: t.requeue(STEP, "x", ALICE))


def _finished(worker_id: UUID, token: int) -> ReportGroup:
    return ReportGroup(UUID(int=0), worker_id, [
        StepReport(STEP, token, "started", pid=7),
        StepReport(STEP, token, "log", lines=(["2026-11-22T00:00:00.000+00:00", "stdout", "x"],)),
        StepReport(STEP, token, "finished", outcome="success", exit_code=0),
    ], agent(worker_id))


def _for(task_id: UUID, group: ReportGroup) -> ReportGroup:
    return ReportGroup(task_id, group.worker_id, group.reports, group.actor)


def test_a_batch_of_several_tasks_reports_is_one_save(app: Shoal) -> None:
    (a, wa, ta), (b, wb, tb) = assigned_script_task(app), assigned_script_task(app)
    before = head(app)

    outcomes = app.apply_report_batch([_for(a, _finished(wa, ta)), _for(b, _finished(wb, tb))])

    assert [o.refused for o in outcomes] == [[], []]
    assert [o.task.state for o in outcomes if o.task] == [TaskState.SUCCESS, TaskState.SUCCESS]
    assert outcomes[0].position == outcomes[1].position == head(app)
    events = events_after(app, before)
    # started, finished and the task's end for each, plus each log's batch (and creation)
    assert len(events) == 2 * 5
    assert app.get_task(a).state is app.get_task(b).state is TaskState.SUCCESS


def test_a_batch_refuses_what_the_fencing_rule_refuses_and_records_the_rest(app: Shoal) -> None:
    (a, _, ta), (b, wb, tb) = assigned_script_task(app), assigned_script_task(app)
    intruder = uuid4()

    outcomes = app.apply_report_batch([
        _for(a, _finished(intruder, ta)), _for(b, _finished(wb, tb)), _for(uuid4(), _finished(wb, tb)),
    ])

    assert outcomes[0].task is None and outcomes[0].position is None
    assert len(outcomes[0].refused) == 3
    assert outcomes[1].refused == [] and outcomes[1].task is not None
    assert outcomes[2].task is None and "does not exist" in outcomes[2].refused[0]
    assert app.get_task(a).run_of(STEP).state is StepState.ASSIGNED
    assert app.get_task(b).state is TaskState.SUCCESS


def test_a_batch_that_conflicts_is_applied_group_by_group(
    app: Shoal, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a, wa, ta), (b, wb, tb) = assigned_script_task(app), assigned_script_task(app)
    real_save = app.save
    calls: list[int] = []

    def conflicting(*aggregates: object, **kwargs: object) -> object:
        calls.append(len(aggregates))
        if len(calls) == 1:
            raise RecordConflictError("someone else wrote task a")
        return real_save(*aggregates, **kwargs)

    monkeypatch.setattr(app, "save", conflicting)
    outcomes = app.apply_report_batch([_for(a, _finished(wa, ta)), _for(b, _finished(wb, tb))])

    assert calls == [4, 2, 2]  # both tasks and logs, then each task with its log
    assert [o.refused for o in outcomes] == [[], []]
    assert outcomes[0].position is not None and outcomes[0].position < (outcomes[1].position or 0)
    assert app.get_task(a).state is app.get_task(b).state is TaskState.SUCCESS


def _started_event_time(app: Shoal, task_id: UUID, before: int) -> datetime:
    (started,) = [e for e in events_after(app, before) if type(e).__name__ == "StepStarted"]
    assert started.originator_id == task_id
    return started.timestamp


def test_a_step_started_when_the_worker_says_it_began(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    assigned_at = app.get_task(task_id).modified_on
    began = assigned_at + timedelta(milliseconds=3)
    time.sleep(0.01)  # the report arrives after the step began
    before = head(app)
    app.apply_reports(task_id, worker_id, [StepReport(STEP, token, "started", pid=5, started_at=began)],
                      actor=agent(worker_id))
    assert _started_event_time(app, task_id, before) == began


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)], ids=["behind", "ahead"])
def test_a_worker_clock_off_by_an_hour_still_gives_a_start_between_assignment_and_arrival(
    app: Shoal, skew: timedelta
) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    assigned_at = app.get_task(task_id).modified_on
    before = head(app)
    app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "started", pid=5, started_at=datetime.now(UTC) + skew)],
        actor=agent(worker_id))
    started = _started_event_time(app, task_id, before)
    assert assigned_at <= started <= datetime.now(UTC)
    assert started == assigned_at if skew < timedelta(0) else started > assigned_at


@pytest.mark.parametrize(("texts", "used", "limit", "kept", "fits"), [
    (["ab", "cd"], 0, 6, ["ab", "cd"], True),  # each line counts its newline too
    (["ab", "cd"], 1, 6, ["ab"], False),
    (["abcde"], 0, 5, [], False),
    ([], 9, 4, [], True),
    (["", "", ""], 2, 4, ["", ""], False),  # empty lines are not free
])
def test_within_limit_keeps_the_leading_lines_that_fit(
    texts: list[str], used: int, limit: int, kept: list[str], fits: bool
) -> None:
    lines = [["2026-12-07T00:00:00.000+00:00", "stdout", t] for t in texts]
    got, whole = within_limit(lines, used, limit)
    assert ([line[2] for line in got], whole) == (kept, fits)


def test_a_worker_that_sends_more_log_than_a_step_keeps_has_the_rest_dropped(app: Shoal) -> None:
    """The worker keeps the limit itself; one that does not (a bug, a hostile machine)
    must not fill the server's disk: the log is cut once, with a line saying so."""
    task_id, worker_id, token = assigned_script_task(app)
    at = "2026-12-07T00:00:00.000+00:00"

    def log(*texts: str) -> StepReport:
        return StepReport(STEP, token, "log", lines=tuple([at, "stdout", t] for t in texts))

    for batch in (log("12345", "67890"), log("abcde", "fghij", "klmno"), log("more"), log("and more")):
        _, refused = app.apply_reports(task_id, worker_id, [batch], actor=agent(worker_id),
                                       log_limit=14)
        assert refused == []
    app.apply_reports(task_id, worker_id, [StepReport(STEP, token, "finished", outcome="success",
                                                      exit_code=0)], actor=agent(worker_id),
                      log_limit=14)

    task_log = app.repository.get(log_id(task_id))
    assert isinstance(task_log, TaskLog)
    assert task_log.cut_steps == {STEP} and task_log.line_count == 3
    appended = [e for e in events_after(app, 0) if isinstance(e, TaskLog.LinesAppended)]
    lines = [line for e in appended for line in e.lines]
    assert [line[2] for line in lines[:2]] == ["12345", "67890"]
    assert lines[2][1] == "system" and lines[2][2] == cut_notice(14)
    assert [type(e).__name__ for e in events_after(app, 0)].count("Cut") == 1
    # The step itself is not the log's business: its end is recorded as reported.
    assert app.get_task(task_id).state is TaskState.SUCCESS


def test_without_a_limit_a_log_is_kept_whole(app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    app.apply_reports(task_id, worker_id, [StepReport(STEP, token, "log", lines=(
        ["2026-12-07T00:00:00.000+00:00", "stdout", "x" * 100],))], actor=agent(worker_id))
    task_log = app.repository.get(log_id(task_id))
    assert isinstance(task_log, TaskLog) and task_log.cut_steps == set()
    assert task_log.step_chars == {STEP: 101}
