"""One accepted step on the agent: run it through the step runner and send its reports
(started, log batches, artifacts, finished) in order, each retried until JetStream
acknowledges it. An artifact goes as parts of ARTIFACT_PART_BYTES and then a manifest that
lists the stream sequences of its parts (the server reads them back from the stream)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.ports import (
    AgentTransport,
    Artifact,
    LogLine,
    PackageFile,
    StepRequest,
    StepResult,
    StepRunner,
)
from domain.messages import ARTIFACT_PART_BYTES, ExecStep, Report, ReportKind, encode

log = logging.getLogger("shoal.agent")


class GaveUp(Exception):
    """Reports can no longer be delivered (stop grace over, or credentials revoked)."""


@dataclass(frozen=True)
class ReportSender:
    """Publishes reports on the agent's reports subject, each until JetStream acknowledges
    it (the same message id every time, so a repeat counts once), with exponential back-off
    from ``retry_initial`` to ``retry_max`` seconds; raises GaveUp once ``give_up`` is set."""

    bus: AgentTransport
    subject: str
    give_up: asyncio.Event
    timeout: float = 5.0
    retry_initial: float = 0.1
    retry_max: float = 5.0

    async def send(self, report: Report) -> int:
        """Deliver ``report`` (see the class docstring); returns its stream sequence."""
        payload, msg_id = encode(report), report.message_id()
        extra = {"worker_id": report.worker_id, "report": msg_id, "kind": report.kind}
        delay, failures = self.retry_initial, 0
        while not self.give_up.is_set():
            try:
                seq = await self.bus.js_publish(self.subject, payload, msg_id, timeout=self.timeout)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("report not delivered; retrying", extra={**extra, "error": str(exc)})
            else:
                if failures:
                    log.info("report delivered after retrying", extra={**extra, "attempts": failures + 1})
                return seq
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.give_up.wait()
            delay = min(delay * 2, self.retry_max)
        raise GaveUp(msg_id)


@dataclass
class Execution:
    """A step this agent accepted. ``cancel`` stops it; ``reason`` says why the agent
    itself cancelled it (it replaces the plain "cancelled" in the finished report)."""

    step: ExecStep
    worker_id: str
    sender: ReportSender
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    seq: int = 0

    async def run(self, runner: StepRunner, env: Mapping[str, str], work_root: Path,
                  chunk_bytes: int) -> StepResult | None:
        """Run the step and report it; None when it could not start (reported as failed)."""
        step = self.step
        try:
            request = StepRequest(
                task_id=step.task_id, step_name=step.step, syntax=step.syntax, script=step.script,
                env=dict(env), work_root=work_root, timeout_s=step.timeout_s,
                max_log_bytes=step.max_log_bytes,
                packages=tuple(PackageFile(p.id, p.version, p.sha256, p.file_name) for p in step.packages),
            )
        except ValueError as exc:
            await self.report("log", lines=((iso(datetime.now(UTC)), "system", str(exc)),))
            await self.report("finished", outcome="failed", reason=str(exc))
            return None

        async def started(pid: int, at: datetime | None = None) -> None:
            # When the process began, by this machine's clock: the server keeps it between
            # the assignment and the report's arrival, so a skewed clock cannot put a start
            # before its assignment or in the future.
            began = "" if at is None else at.astimezone(UTC).isoformat()
            await self.report("started", pid=pid, started_at=began)

        async def sink(lines: Sequence[LogLine]) -> None:
            for chunk in chunks(lines, chunk_bytes):
                await self.report("log", lines=chunk)

        result = await runner.run(request, sink, self.cancel, started, self.send_artifact)
        reason = self.reason if result.outcome == "cancelled" and self.reason else result.reason
        await self.report("finished", outcome=result.outcome, exit_code=result.exit_code, reason=reason)
        return result

    async def send_artifact(self, artifact: Artifact) -> None:
        """Send one artifact: its parts, then its manifest (sha256, size, part sequences)."""
        parts: list[int] = []
        with artifact.path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, ARTIFACT_PART_BYTES):
                data = base64.b64encode(chunk).decode("ascii")
                parts.append(await self.report("artifact", name=artifact.name, data=data))
        await self.report("artifact", name=artifact.name, size=artifact.size, sha256=artifact.sha256,
                          parts=tuple(parts))

    async def report(self, kind: ReportKind, **fields: Any) -> int:
        """Send the next report of this execution (its ``seq`` counts from 0); returns its
        stream sequence."""
        step = self.step
        report = Report(
            worker_id=self.worker_id, task_id=step.task_id, step=step.step,
            assignment=step.assignment, kind=kind, seq=self.seq, **fields,
        )
        self.seq += 1
        return await self.sender.send(report)


def iso(at: datetime) -> str:
    """A log line's time as the reports carry it."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def chunks(lines: Sequence[LogLine], limit: int) -> Iterator[tuple[tuple[str, str, str], ...]]:
    """Log lines as ``[iso, stream, text]`` triples, in runs of at most about ``limit``
    bytes (one NATS message must stay below the server's max payload)."""
    chunk: list[tuple[str, str, str]] = []
    size = 0
    for line in lines:
        cost = len(line.text.encode("utf-8", "surrogateescape")) + 64
        if chunk and size + cost > limit:
            yield tuple(chunk)
            chunk, size = [], 0
        chunk.append((iso(line.at), line.stream, line.text))
        size += cost
    if chunk:
        yield tuple(chunk)
