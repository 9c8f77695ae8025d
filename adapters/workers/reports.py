"""Reports from agents (stream SHOAL_REPORTS) become Task events.

One durable pull consumer reads them in order; a fetched batch is grouped per (task,
worker) and each group is one save, so a busy worker costs a save per batch rather than
per line. The subject names the sender (NATS permissions let an agent publish only on its
own), and the domain's fencing rule decides what is accepted; refusals are logged and
acknowledged, never retried. A report is acknowledged only after its events are stored,
so a server killed mid-batch gets the batch again after its restart.

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
from nats.aio.msg import Msg

from adapters.nats import subjects
from adapters.nats.bus import NatsBus
from adapters.nats.objects import ObjectFiles
from adapters.workers import artifacts
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.errors import NotFound
from domain.messages import ProtocolError, Report, decode_report
from domain.reports import StepReport, refusal

log = logging.getLogger("shoal.workers")

CONSUMER = "shoal-server"
BATCH = 256
STREAMS = frozenset({"stdout", "stderr", "system"})


def _worker_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def to_step_report(report: Report) -> StepReport:
    """The domain's view of a report (log lines with a known stream only)."""
    lines = tuple([t, s, x] for t, s, x in report.lines if s in STREAMS)
    return StepReport(
        step=report.step, assignment=report.assignment, kind=report.kind, pid=report.pid,
        lines=lines, outcome=report.outcome, exit_code=report.exit_code, reason=report.reason,
    )


class ReportIntake:
    """start() / stop(); ``on_changed(task_id)`` is called after a task was updated."""

    def __init__(self, app: Shoal, bus: NatsBus, on_changed: Callable[[UUID], None]) -> None:
        self.app = app
        self.bus = bus
        self.on_changed = on_changed
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
            await self.handle(msgs)

    async def handle(self, msgs: list[Msg]) -> None:
        """Apply one fetched batch and acknowledge it."""
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
        parts: list[int] = []
        # The tasks' groups are applied concurrently: each is a save of its own task (the
        # store's group commit puts concurrent saves into one transaction), and one after
        # another they made a busy batch's last report wait for a hundred saves before it.
        # Groups of one task (parallel steps on several workers) stay one after another:
        # concurrent saves of one aggregate would only conflict and retry.
        by_task: dict[UUID, list[tuple[UUID, list[Report]]]] = {}
        for (task_id, worker_id), reports in groups.items():
            by_task.setdefault(task_id, []).append((worker_id, reports))

        async def apply_task(task_id: UUID, work: list[tuple[UUID, list[Report]]]) -> None:
            for worker_id, reports in work:
                await self._apply(task_id, worker_id, reports, parts)

        results = await asyncio.gather(
            *(apply_task(task_id, work) for task_id, work in by_task.items()),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for r in failed:
            if not isinstance(r, Exception):
                raise r  # cancelled (stopping), or worse: not ours to swallow
        if failed:
            # The store is unreachable, say: have the batch again in a moment, in order.
            log.error("could not record reports; they will be delivered again",
                      exc_info=failed[0])
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
            return
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.ack()
        await artifacts.forget_parts(self.bus, parts)

    def _apply_sync(
        self, task_id: UUID, worker_id: UUID, reports: list[StepReport]
    ) -> tuple[int | None, list[str]]:
        try:
            name = self.app.get_worker(worker_id).name
        except NotFound:
            return None, [f"worker {worker_id} is not registered"]
        actor = Actor(ActorKind.AGENT, str(worker_id), name)
        return self.app.apply_reports(task_id, worker_id, reports, actor=actor)

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

    async def _apply(self, task_id: UUID, worker_id: UUID, received: list[Report], parts: list[int]) -> None:
        reports: list[StepReport] = []
        for report in received:
            if not report.is_manifest:
                reports.append(to_step_report(report))
                continue
            parts.extend(report.parts)
            stored = await self._artifact(task_id, worker_id, report)
            if stored is not None:
                reports.append(stored)
        try:
            position, refused = await asyncio.to_thread(self._apply_sync, task_id, worker_id, reports)
        except NotFound:
            refused, position = [f"task {task_id} does not exist"], None
        for why in refused:
            log.warning("report refused", extra={"worker_id": str(worker_id), "task_id": str(task_id),
                                                 "reason": why})
        if position is not None:
            self.on_changed(task_id)
