"""The report intake against a real nats-server and a real store: reports become Task
events in order, and forged, stale or malformed ones change nothing and are logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from adapters.nats import subjects
from adapters.nats.bus import NatsBus
from adapters.workers.reports import LOG_SLACK_CHARS, ReportIntake
from domain.app import Shoal
from domain.app.tasks import ReportGroup, ReportOutcome
from domain.messages import Report, encode
from domain.plan import StepState, TaskState
from domain.tasklog import TaskLog, log_id
from projections.runner import ProjectionRunner
from projections.tasks import get_task
from tests.helpers import assigned_script_task
from tests.integration.conftest import Views
from tests.integration.nats_support import bus_on, embedded, eventually

pytestmark = pytest.mark.integration
STEP = "Run script"


@asynccontextmanager
async def intake_on(
    tmp_path: Path, app: Shoal, changed: Callable[[UUID, Any], None] = lambda *_: None,
    *, log_limit_bytes: int | None = None, published: Sequence[tuple[str, bytes, str]] = (),
) -> AsyncIterator[NatsBus]:
    """A running ReportIntake over a nats-server of its own; yields the bus to publish
    reports on. ``published`` (subject, data, message id) are in the stream before the
    intake starts, so that its first fetch takes them all."""
    async with embedded(tmp_path) as nats, bus_on(nats.url, "server") as bus:
        await bus.ensure_streams()
        for subject, data, msg_id in published:
            await bus.js_publish(subject, data, msg_id)
        intake = ReportIntake(app, bus, changed, log_limit_bytes)
        await intake.start()
        try:
            yield bus
        finally:
            await intake.stop()


async def ended(app: Shoal, task_id: UUID, what: str = "the task to end") -> None:
    await eventually(lambda: app.get_task(task_id).state.is_final, timeout=10, what=what)


def test_reports_are_recorded_and_forgeries_refused(
    tmp_path: Path, app: Shoal, caplog: pytest.LogCaptureFixture
) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    intruder = str(UUID(int=7))
    changed: list[tuple[UUID, Any]] = []

    def report(kind: str, seq: int, **more: object) -> Report:
        return Report(str(worker_id), str(task_id), STEP, token, kind, seq, **more)  # type: ignore[arg-type]

    async def body() -> None:
        async with intake_on(tmp_path, app, lambda task_id, task: changed.append((task_id, task))) as bus:
            out = subjects.reports(str(worker_id))
            # A report naming the worker, sent on someone else's subject...
            forged = report("finished", 9, outcome="success", exit_code=0)
            await bus.js_publish(subjects.reports(intruder), encode(forged), "f1")
            # ...garbage, a stale token, then the real ones in order.
            await bus.js_publish(out, b"{not json", "g1")
            stale = Report(str(worker_id), str(task_id), STEP, token - 1, "finished", 0,
                           outcome="success")
            await bus.js_publish(out, encode(stale), "s1")
            for r in (report("started", 0, pid=4),
                      report("log", 1, lines=(("2026-11-22T00:00:00+00:00", "stdout", "hello"),)),
                      report("finished", 2, outcome="failed", exit_code=3, reason="exit code 3")):
                await bus.js_publish(out, encode(r), r.message_id())
            # The same report again (a retry after a reconnect) counts once.
            again = report("started", 0, pid=4)
            await bus.js_publish(out, encode(again), again.message_id())
            await ended(app, task_id)

    caplog.set_level(logging.WARNING, logger="shoal.workers")
    asyncio.run(body())
    task = app.get_task(task_id)
    run = task.run_of(STEP)
    assert (run.state, run.exit_code, task.state) == (StepState.FAILED, 3, TaskState.FAILED)
    assert changed and {t for t, _ in changed} == {task_id}
    # Each change comes with the task as saved, so a run need not read it back.
    assert changed[-1][1].version == app.get_task(task_id).version
    log: object = app.repository.get(log_id(task_id))
    assert isinstance(log, TaskLog) and log.line_count == 1
    refused = [r.__dict__.get("reason", "") for r in caplog.records if r.getMessage() == "report refused"]
    assert any("names worker" in why for why in refused), refused
    assert any("not JSON" in why for why in refused), refused
    assert any("stale assignment" in why for why in refused), refused



def test_numbers_no_column_can_hold_are_refused_and_the_read_models_go_on(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exit code past 64 bits, once recorded, would stop every projection for good
    (no read-model column holds it): such a report is refused at the door."""
    task_id, worker_id, token = assigned_script_task(app)
    out = subjects.reports(str(worker_id))

    def finished(seq: int, exit_code: int) -> bytes:
        # The stdlib writes what orjson (and so encode()) would not.
        return json.dumps({**orjson.loads(encode(Report(
            str(worker_id), str(task_id), STEP, token, "finished", seq, outcome="failed"))),
            "exit_code": exit_code}).encode()

    async def body() -> None:
        async with intake_on(tmp_path, app) as bus:
            await bus.js_publish(out, finished(0, 2**63), "huge")
            await bus.js_publish(out, finished(1, 7), "fine")
            await ended(app, task_id)

    caplog.set_level(logging.WARNING, logger="shoal.workers")
    asyncio.run(body())
    assert app.get_task(task_id).run_of(STEP).exit_code == 7
    refused = [r.__dict__.get("reason", "") for r in caplog.records if r.getMessage() == "report refused"]
    assert any("'exit_code' is out of range" in why for why in refused), refused
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()
    view = get_task(views, str(task_id))
    assert view is not None and view["steps"][0]["exit_code"] == 7


def test_a_report_that_cannot_be_recorded_does_not_hold_up_the_others(
    tmp_path: Path, app: Shoal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redelivered, a report whose recording fails for good would fail again for ever,
    and with it every report fetched in the same batch: the others are recorded, it is
    dropped with an error in the log, and it does not come back."""
    poisoned, poisoned_worker, poisoned_token = assigned_script_task(app)
    healthy, healthy_worker, healthy_token = assigned_script_task(app)
    real = app.apply_report_batch
    attempts: list[UUID] = []

    def apply_report_batch(
        groups: Sequence[ReportGroup], log_limit: int | None = None
    ) -> list[ReportOutcome]:
        attempts.extend(g.task_id for g in groups if g.task_id == poisoned)
        if any(g.task_id == poisoned for g in groups):
            raise TypeError("a report nobody foresaw")
        return real(groups, log_limit)

    monkeypatch.setattr(app, "apply_report_batch", apply_report_batch)

    def finished(task_id: UUID, worker_id: UUID, token: int) -> Report:
        return Report(str(worker_id), str(task_id), STEP, token, "finished", 0, outcome="success",
                      exit_code=0)

    # Both wait in the stream before the intake starts: one batch holds them.
    reports = [finished(task_id, worker_id, token) for task_id, worker_id, token in (
        (poisoned, poisoned_worker, poisoned_token), (healthy, healthy_worker, healthy_token))]
    published = [(subjects.reports(r.worker_id), encode(r), r.message_id()) for r in reports]

    async def body() -> None:
        async with intake_on(tmp_path, app, published=published):
            await ended(app, healthy, "the healthy task to end")
            tried = len(attempts)
            await asyncio.sleep(2.5)  # a nak'd batch comes back after 1 s
            assert len(attempts) == tried, "the dropped report was delivered again"

    caplog.set_level(logging.WARNING, logger="shoal.workers")
    asyncio.run(body())
    assert app.get_task(healthy).state is TaskState.SUCCESS
    assert app.get_task(poisoned).state is TaskState.EXECUTING
    dropped = [r for r in caplog.records if r.getMessage() == "report dropped: it cannot be recorded"]
    assert len(dropped) == 1 and "a report nobody foresaw" in dropped[0].__dict__["reason"]
    assert dropped[0].__dict__["worker_id"] == str(poisoned_worker)


def test_a_worker_sending_more_log_than_it_was_told_has_it_cut(
    tmp_path: Path, app: Shoal, caplog: pytest.LogCaptureFixture,
) -> None:
    """The intake keeps a step's log within the server's limit (plus slack for the
    agent's own markers), whatever the worker sends."""
    task_id, worker_id, token = assigned_script_task(app)
    out = subjects.reports(str(worker_id))
    line = "x" * 999
    at = "2026-12-07T00:00:00.000+00:00"

    async def body() -> None:
        # A limit of 0 leaves only the slack: 1 MiB of text.
        async with intake_on(tmp_path, app, log_limit_bytes=0) as bus:
            for seq in range(4):  # 4 x 300 lines of 1,000 characters: 1.2 MB
                report = Report(str(worker_id), str(task_id), STEP, token, "log", seq,
                                lines=tuple((at, "stdout", line) for _ in range(300)))
                await bus.js_publish(out, encode(report), report.message_id())
            done = Report(str(worker_id), str(task_id), STEP, token, "finished", 4,
                          outcome="success", exit_code=0)
            await bus.js_publish(out, encode(done), done.message_id())
            await ended(app, task_id)

    asyncio.run(body())
    log: object = app.repository.get(log_id(task_id))
    assert isinstance(log, TaskLog) and log.cut_steps == {STEP}
    assert log.step_chars[STEP] <= LOG_SLACK_CHARS
    kept = LOG_SLACK_CHARS // (len(line) + 1)  # a line counts its newline
    assert log.line_count == kept + 1  # and the line that says it was cut
    assert app.get_task(task_id).state is TaskState.SUCCESS
