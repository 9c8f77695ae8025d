"""Reports from agents (stream SHOAL_REPORTS) become Task events.

One durable pull consumer reads them in order; a fetched batch is grouped per (task,
worker) and the whole batch is recorded with one save (per group should that conflict),
so busy workers cost a save per batch rather than per report. The subject names the
sender (NATS permissions let an agent publish only on its own), and the domain's fencing
rule decides what is accepted; refusals are logged and acknowledged, never retried. A
report is acknowledged only after its events are stored, so a server killed mid-batch
gets the batch again after its restart; so does one whose store is unreachable. A report
that fails for any other reason is dropped with an error in the log, never redelivered
for ever in front of every agent's reports.

Artifact parts are skipped here: when an artifact's manifest comes, its parts are read
back from the stream (adapters/workers/artifacts.py), the file is stored, and the parts are
deleted from the stream once the batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

import nats.errors
from eventsourcing.persistence import InterfaceError, OperationalError
from nats.aio.msg import Msg

from adapters.nats import subjects
from adapters.nats.bus import BusError, NatsBus
from adapters.nats.objects import ObjectFiles
from adapters.workers import artifacts
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.app.tasks import ReportGroup
from domain.errors import NotFound
from domain.messages import ProtocolError, Report, decode_report
from domain.reports import StepReport, refusal
from domain.tasks import Task

log = logging.getLogger("shoal.workers")

CONSUMER = "shoal-server"
BATCH = 256
LOG_SLACK_CHARS = 1024 * 1024
STREAMS = frozenset({"stdout", "stderr", "system"})


def _worker_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def _passes(exc: BaseException) -> bool:
    """Whether recording may succeed when tried again: the store or NATS was away."""
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError
                      | nats.errors.Error | BusError)


async def _nak(msgs: list[Msg]) -> None:
    for msg in msgs:
        with contextlib.suppress(Exception):
            await msg.nak(delay=1.0)


def to_step_report(report: Report) -> StepReport:
    """The domain's view of a report (log lines with a known stream only)."""
    lines = tuple([t, s, x] for t, s, x in report.lines if s in STREAMS)
    return StepReport(
        step=report.step, assignment=report.assignment, kind=report.kind, pid=report.pid,
        lines=lines, outcome=report.outcome, exit_code=report.exit_code, reason=report.reason,
        started_at=report.started_time,
    )


class ReportIntake:
    """start() / stop(); ``on_changed(task_id, task)`` is called with each task a batch
    changed, as saved. ``log_limit_bytes``: the log a step may keep, as the workers were
    told (None: no check here)."""

    def __init__(
        self, app: Shoal, bus: NatsBus, on_changed: Callable[[UUID, Task | None], None],
        log_limit_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.bus = bus
        self.on_changed = on_changed
        # Counted as the agent counts (TaskLog.line_size: text and newline), in characters,
        # which an honest agent's log never has more of than bytes; with room for its
        # own markers and system lines.
        self.log_limit = None if log_limit_bytes is None else log_limit_bytes + LOG_SLACK_CHARS
        self.artifacts = ObjectFiles(bus, subjects.ARTIFACTS_BUCKET)
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._stopping = False

    async def start(self) -> None:
        """Make sure the consumer exists and start reading."""
        await self.bus.ensure_pull_consumer(
            subjects.REPORTS_STREAM, CONSUMER, subjects.REPORTS_SUBJECTS, ack_wait=30.0,
            max_ack_pending=10_000,
        )
        self._task = asyncio.create_task(self._follow(), name="shoal-report-intake")

    async def stop(self) -> None:
        """Stop reading (the batch in hand is finished first)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            # A pull subscription left open makes the bus's drain wait for its timeout.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _follow(self) -> None:
        while not self._stopping:
            try:
                if self._sub is None:
                    self._sub = await self.bus.pull_subscription(subjects.REPORTS_STREAM, CONSUMER)
                msgs = await self._sub.fetch(BATCH, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnecting NATS, a consumer being recreated...
                log.warning("cannot fetch reports; retrying", extra={"error": repr(exc)})
                self._sub = None
                await asyncio.sleep(0.5)
                continue
            try:
                await self.handle(msgs)
            except Exception:  # a bug must not stop the intake for good
                log.exception("report batch failed")

    async def handle(self, msgs: list[Msg]) -> None:
        """Apply one fetched batch and acknowledge it. Should that fail for a reason
        that does not pass (a report nobody foresaw, a bug), the batch is recorded one
        message at a time instead, and only what fails on its own is dropped, with an
        error in the log: redelivered, it would fail again, for ever, and hold up every
        agent's reports fetched with it."""
        try:
            await self._record(msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _passes(exc):
                # The store is unreachable, say: have the batch again in a moment, in order.
                log.exception("could not record reports; they will be delivered again")
                await _nak(msgs)
                return
            log.exception("could not record a batch of reports; recording them one by one")
        else:
            return
        for i, msg in enumerate(msgs):
            try:
                await self._record([msg])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _passes(exc):
                    log.exception("could not record reports; they will be delivered again")
                    await _nak(msgs[i:])  # the rest too, so they stay in order
                    return
                # The traceback goes to the log line's "error"; the reason stands apart.
                log.error("report dropped: it cannot be recorded", exc_info=True, extra={
                    "worker_id": _worker_of(msg.subject), "reason": f"{type(exc).__name__}: {exc}"})
                with contextlib.suppress(Exception):
                    await msg.term()

    async def _record(self, msgs: list[Msg]) -> None:
        """Record the reports of ``msgs`` and acknowledge them; raises when they could
        not be recorded (nothing is acknowledged then)."""
        groups = self._group(msgs)
        parts: list[int] = []
        # Artifact manifests need their files fetched first (concurrently); then the
        # whole batch is recorded with one trip to a thread and one save.
        ready = await asyncio.gather(*(
            self._prepare(task_id, worker_id, reports, parts)
            for (task_id, worker_id), reports in groups.items()
        ), return_exceptions=True)
        prepared = [r for r in ready if not isinstance(r, BaseException)]
        for failure in (r for r in ready if isinstance(r, BaseException)):
            raise failure
        outcomes = await asyncio.to_thread(self._apply_sync, prepared)
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.ack()
        await artifacts.forget_parts(self.bus, parts)
        self._tell(prepared, outcomes)

    def _group(self, msgs: list[Msg]) -> dict[tuple[UUID, UUID], list[Report]]:
        """The batch's reports by (task, worker), in order; malformed ones logged."""
        groups: dict[tuple[UUID, UUID], list[Report]] = {}
        for msg in msgs:
            sender = _worker_of(msg.subject)
            try:
                report = decode_report(msg.data)
                if report.worker_id != sender:
                    raise ProtocolError(f"sent on {sender}'s subject but names worker {report.worker_id}")
                key = (UUID(report.task_id), UUID(report.worker_id))
            except (ProtocolError, ValueError) as exc:
                log.warning("report refused", extra={"worker_id": sender, "reason": str(exc)})
                continue
            if report.kind == "artifact" and not report.is_manifest:
                continue  # a part: read back from the stream when its manifest comes
            groups.setdefault(key, []).append(report)
        return groups

    def _tell(
        self, prepared: list[tuple[UUID, UUID, list[StepReport]]],
        outcomes: list[tuple[Task | None, list[str]]],
    ) -> None:
        """Log what was refused; hand each changed task, as saved, to on_changed."""
        changed: dict[UUID, Task] = {}
        for (task_id, worker_id, _), (task, refused) in zip(prepared, outcomes, strict=True):
            for why in refused:
                log.warning("report refused", extra={"worker_id": str(worker_id),
                                                     "task_id": str(task_id), "reason": why})
            if task is not None:
                changed[task_id] = task
        for task_id, task in changed.items():
            self.on_changed(task_id, task)

    def _apply_sync(
        self, prepared: list[tuple[UUID, UUID, list[StepReport]]]
    ) -> list[tuple[Task | None, list[str]]]:
        """Record a batch (in a worker thread): each group as the worker it came from,
        all in one save. Per group: the task as saved (None if nothing was recorded)
        and why each refused report was refused."""
        names: dict[UUID, str | None] = {}
        for _, worker_id, _ in prepared:
            if worker_id not in names:
                try:
                    names[worker_id] = self.app.get_worker(worker_id).name
                except NotFound:
                    names[worker_id] = None
        groups = [
            ReportGroup(task_id, worker_id, reports,
                        Actor(ActorKind.AGENT, str(worker_id), names[worker_id] or ""))
            for task_id, worker_id, reports in prepared if names[worker_id] is not None
        ]
        applied = iter(self.app.apply_report_batch(groups, self.log_limit))
        results: list[tuple[Task | None, list[str]]] = []
        for _, worker_id, _ in prepared:
            if names[worker_id] is None:
                results.append((None, [f"worker {worker_id} is not registered"]))
            else:
                outcome = next(applied)
                results.append((outcome.task, outcome.refused))
        return results

    def _fence(self, task_id: UUID, worker_id: UUID, report: Report) -> str | None:
        try:
            task = self.app.get_task(task_id)
        except NotFound:
            return f"task {task_id} does not exist"
        return refusal(task.runs.get(report.step), worker_id, report.assignment)

    async def _artifact(self, task_id: UUID, worker_id: UUID, manifest: Report) -> StepReport | None:
        """Store an artifact whose manifest came: the report that records it, a log line
        saying why it was refused, or None when its assignment is not current."""
        why = await asyncio.to_thread(self._fence, task_id, worker_id, manifest)
        if why is not None:
            log.warning("artifact refused", extra={"worker_id": str(worker_id), "task_id": str(task_id),
                                                   "reason": why})
            return None
        try:
            return await artifacts.receive(self.bus, self.artifacts, str(worker_id), manifest)
        except artifacts.ArtifactRefused as exc:
            log.warning("artifact refused", extra={"worker_id": str(worker_id), "task_id": str(task_id),
                                                   "reason": str(exc)})
            return artifacts.refusal_note(manifest, str(exc))

    async def _prepare(
        self, task_id: UUID, worker_id: UUID, received: list[Report], parts: list[int]
    ) -> tuple[UUID, UUID, list[StepReport]]:
        """One group's reports as the domain takes them, artifacts stored first."""
        reports: list[StepReport] = []
        for report in received:
            if not report.is_manifest:
                reports.append(to_step_report(report))
                continue
            parts.extend(report.parts)
            stored = await self._artifact(task_id, worker_id, report)
            if stored is not None:
                reports.append(stored)
        return task_id, worker_id, reports
