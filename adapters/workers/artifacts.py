"""Artifacts from agents: when an artifact's manifest report arrives, read its parts back
from the reports stream (by the sequences it lists), check them, and store the file in
the artifacts bucket. The caller then records it on the task with the other reports of
the batch, and deletes the parts from the stream once the batch is acknowledged.

A part is accepted only if it was published on the same worker's reports subject (NATS
lets an agent publish only on its own) and names the same task, step, assignment and
artifact as its manifest, so nobody can splice in another agent's bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import nats.js.errors

from adapters.nats import subjects
from adapters.nats.bus import NatsBus
from adapters.nats.objects import ObjectFiles, artifact_object
from domain.artifacts import MAX_ARTIFACT_BYTES, is_sha256, name_problem
from domain.messages import ARTIFACT_PART_BYTES, ProtocolError, Report, decode_report
from domain.reports import StepReport


class ArtifactRefused(Exception):
    """The artifact cannot be stored (the message says why; it goes to the task log)."""


def refusal_note(report: Report, why: str) -> StepReport:
    """A system log line in the step's log saying an artifact was refused."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    text = f"artifact {report.name!r} refused by the server: {why}"
    return StepReport(step=report.step, assignment=report.assignment, kind="log",
                      lines=([at, "system", text],))


async def receive(bus: NatsBus, store: ObjectFiles, worker_id: str, manifest: Report) -> StepReport:
    """Assemble, check and store one artifact; the report that records it. Raises
    ArtifactRefused for a bad name, size, part or digest."""
    problem = name_problem(manifest.name)
    if problem is not None:
        raise ArtifactRefused(f"bad name: {problem}")
    size = manifest.size or 0
    if not 0 <= size <= MAX_ARTIFACT_BYTES:
        raise ArtifactRefused(f"it is larger than {MAX_ARTIFACT_BYTES} bytes")
    if not is_sha256(manifest.sha256):
        raise ArtifactRefused("its SHA-256 is malformed")
    if len(manifest.parts) > size // ARTIFACT_PART_BYTES + 1:
        raise ArtifactRefused("it lists more parts than its size needs")
    with tempfile.TemporaryDirectory(prefix="shoal-artifact-") as tmp:
        path = Path(tmp) / "artifact"
        digest, received = hashlib.sha256(), 0
        with path.open("wb") as out:
            for seq in manifest.parts:
                data = await _part(bus, worker_id, manifest, seq)
                received += len(data)
                if received > size:
                    raise ArtifactRefused("its parts hold more bytes than its size says")
                digest.update(data)
                out.write(data)
        if received != size or digest.hexdigest() != manifest.sha256:
            raise ArtifactRefused("its parts do not match its size and SHA-256")
        await store.put_file(artifact_object(manifest.task_id, manifest.step, manifest.name), path)
    return StepReport(step=manifest.step, assignment=manifest.assignment, kind="artifact",
                      name=manifest.name, size=size, sha256=manifest.sha256)


async def _part(bus: NatsBus, worker_id: str, manifest: Report, seq: int) -> bytes:
    try:
        msg = await bus.jetstream().get_msg(subjects.REPORTS_STREAM, seq=seq)
    except nats.js.errors.NotFoundError:
        raise ArtifactRefused(f"part {seq} is not in the reports stream") from None
    if msg.subject != subjects.reports(worker_id):
        raise ArtifactRefused(f"part {seq} was not sent by this worker")
    try:
        part = decode_report(msg.data or b"")
        data = base64.b64decode(part.data, validate=True)
    except (ProtocolError, binascii.Error, ValueError) as exc:
        raise ArtifactRefused(f"part {seq} is malformed: {exc}") from None
    same = (part.kind, part.task_id, part.step, part.assignment, part.name) == (
        "artifact", manifest.task_id, manifest.step, manifest.assignment, manifest.name)
    if not same or part.is_manifest:
        raise ArtifactRefused(f"part {seq} belongs to another artifact")
    return data


async def forget_parts(bus: NatsBus, seqs: list[int]) -> None:
    """Drop stored artifacts' parts from the reports stream (best effort)."""
    for seq in seqs:
        await bus.delete_message(subjects.REPORTS_STREAM, seq)
