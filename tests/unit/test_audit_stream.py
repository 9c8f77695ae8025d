"""The audit stream (/api/events/stream) once caught up: it sleeps until the read models
move on, also when the newest events are log lines, which the audit does not list."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.http.routers.events import audit_stream
from projections.audit import AuditPage
from projections.watch import PositionWatch


def _row(position: int) -> dict[str, Any]:
    return {"position": position, "type": "WorkerPool.Created", "aggregate_id": "a",
            "aggregate_version": 1, "timestamp": "2026-12-07T22:00:00+00:00", "actor": None,
            "data": {}}


def test_a_caught_up_stream_waits_rather_than_reading_again_and_again() -> None:
    # Events 1-5 are audited; 6-40 are a running step's log lines, which are not.
    audited = [_row(p) for p in range(1, 6)]
    watch = PositionWatch(40)
    reads: list[int] = []

    async def page_after(sent: int) -> AuditPage:
        reads.append(sent)
        await asyncio.sleep(0)
        return AuditPage([r for r in audited if r["position"] > sent], None)

    async def connected() -> bool:
        return False

    async def run() -> list[bytes]:
        got: list[bytes] = []

        async def consume() -> None:
            async for message in audit_stream(0, page_after, watch, connected, keepalive_s=0.05):
                got.append(message)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.3)  # caught up, with the log's tail unaudited
        audited.append(_row(41))
        watch.advance(41)  # an audited event after the log lines
        await asyncio.sleep(0.1)
        consumer.cancel()
        return got

    got = asyncio.run(run())
    ids = [m.split(b"\n")[0] for m in got if m.startswith(b"id: ")]
    assert ids == [b"id: 1", b"id: 2", b"id: 3", b"id: 4", b"id: 5", b"id: 41"]
    assert b": keep-alive\n\n" in got
    # One read to catch up, then about one per keep-alive (0.3 s / 0.05 s), one for 41.
    assert len(reads) < 15, f"{len(reads)} reads of the audit log while nothing changed"
