"""Artifacts from agents through the report intake, against a real nats-server: parts are
read back from the reports stream when the manifest comes, checked, stored in the
artifacts bucket and recorded; spliced or tampered parts are refused in the step's log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from uuid import UUID

import pytest

from adapters.nats import subjects
from adapters.nats.objects import ObjectFiles, artifact_object, ensure_buckets
from adapters.workers.reports import ReportIntake
from domain.app import Shoal
from domain.messages import Report, encode
from domain.tasklog import log_id
from tests.helpers import assigned_script_task
from tests.integration.nats_support import bus_on, embedded, eventually

pytestmark = pytest.mark.integration
STEP = "Run script"


def test_artifacts_are_assembled_checked_and_stored(tmp_path: Path, app: Shoal) -> None:
    task_id, worker_id, token = assigned_script_task(app)
    other = str(UUID(int=9))
    good = b"0123456789" * 60_000  # three parts
    seq = iter(range(100))

    def report(**fields: object) -> Report:
        return Report(str(worker_id), str(task_id), STEP, token, "artifact", next(seq), **fields)  # type: ignore[arg-type]

    def part(name: str, data: bytes) -> Report:
        return report(name=name, data=base64.b64encode(data).decode())

    async def body() -> bytes:
        async with embedded(tmp_path) as nats, bus_on(nats.url, "server") as bus:
            await bus.ensure_streams()
            await ensure_buckets(bus)
            intake = ReportIntake(app, bus, lambda _: None)
            await intake.start()
            out = subjects.reports(str(worker_id))

            async def send(r: Report, subject: str = out) -> int:
                return await bus.js_publish(subject, encode(r), f"{subject}:{r.message_id()}")

            try:
                step = 256 * 1024
                parts = [await send(part("good.bin", good[i:i + step])) for i in range(0, len(good), step)]
                await send(report(name="good.bin", size=len(good), sha256=hashlib.sha256(good).hexdigest(),
                                  parts=tuple(parts)))
                # A part published by another worker, spliced into this worker's manifest.
                foreign = await send(part("spliced.bin", b"evil"), subjects.reports(other))
                await send(report(name="spliced.bin", size=4, sha256=hashlib.sha256(b"evil").hexdigest(),
                                  parts=(foreign,)))
                # Bytes that do not match the manifest's digest.
                bad = await send(part("tampered.bin", b"abc"))
                await send(report(name="tampered.bin", size=3, sha256="00" * 32, parts=(bad,)))
                # A name the server refuses whatever the agent says.
                await send(report(name="../x", size=0, sha256=hashlib.sha256(b"").hexdigest()))
                await eventually(lambda: len(_log(app, task_id)) >= 3, timeout=10, what="refusals")
                chunks = [c async for c in ObjectFiles(bus, subjects.ARTIFACTS_BUCKET).read(
                    artifact_object(str(task_id), STEP, "good.bin"))]
                # Parts of stored artifacts are dropped from the reports stream.
                await eventually(lambda: _gone(bus, parts[0]), timeout=5, what="parts deleted")
                return b"".join(chunks)
            finally:
                await intake.stop()

    stored = asyncio.run(body())
    assert stored == good
    task = app.get_task(task_id)
    assert task.artifacts == {STEP: {"good.bin": (len(good), hashlib.sha256(good).hexdigest())}}
    refusals = "\n".join(_log(app, task_id))
    assert "'spliced.bin' refused by the server: part" in refusals and "not sent by this worker" in refusals
    assert "'tampered.bin' refused by the server: its parts do not match" in refusals
    assert "'../x' refused by the server: bad name: '..' is not allowed" in refusals


def _log(app: Shoal, task_id: UUID) -> list[str]:
    """The texts of the task's log lines, from its stored events."""
    return [line[2] for e in app.events.get(log_id(task_id)) for line in getattr(e, "lines", ())]


async def _gone(bus: object, seq: int) -> bool:
    import nats.js.errors

    try:
        await bus.jetstream().get_msg(subjects.REPORTS_STREAM, seq=seq)  # type: ignore[attr-defined]
    except nats.js.errors.NotFoundError:
        return True
    return False
