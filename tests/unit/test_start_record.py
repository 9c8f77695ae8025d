"""When the server records a built-in or SSH step's start: with its end when the step is
quick, before its first log line, or after START_GRACE_S at the latest; always with the
moment the process began, and never after a line of its log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from adapters.dispatch.onserver import START_GRACE_S, _Start
from domain.actors import SYSTEM


class FakeRun:
    """Records the changes saved, in order, as ('started', pid, at)."""

    def __init__(self, save_takes: float = 0.0) -> None:
        self.task_id = uuid4()
        self.ctx = SimpleNamespace(actor=SYSTEM)
        self.saved: list[tuple[str, int, datetime]] = []
        self.save_takes = save_takes

    async def _update(self, change: Callable[[Any], None]) -> None:
        await asyncio.sleep(self.save_takes)
        run = self

        class Task:
            def mark_started(self, step: str, pid: int, actor: Any, at: datetime) -> None:
                run.saved.append(("started", pid, at))

        change(Task())


AT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def test_a_quick_step_has_its_start_recorded_with_its_end() -> None:
    async def body() -> None:
        run = FakeRun()
        start = _Start(run, "Run script")  # type: ignore[arg-type]
        await start.note(41, AT)
        assert await start.with_end() == (41, AT)
        await asyncio.sleep(START_GRACE_S * 2)
        assert run.saved == [], "nothing saved on its own: the end's save has the start"

    asyncio.run(body())


def test_a_longer_step_has_its_start_recorded_after_the_grace() -> None:
    async def body() -> None:
        run = FakeRun()
        start = _Start(run, "Run script")  # type: ignore[arg-type]
        await start.note(42, AT)
        await asyncio.sleep(START_GRACE_S * 3)
        assert run.saved == [("started", 42, AT)]
        assert await start.with_end() is None

    asyncio.run(body())


def test_a_start_is_recorded_before_the_first_log_line() -> None:
    async def body() -> None:
        run = FakeRun()
        start = _Start(run, "Run script")  # type: ignore[arg-type]
        await start.note(43)
        await start.record()  # what the log sink does first
        assert [pid for _, pid, _ in run.saved] == [43]
        assert run.saved[0][2] <= datetime.now(UTC)
        await start.record()
        assert await start.with_end() is None and len(run.saved) == 1

    asyncio.run(body())


def test_the_end_waits_for_a_start_being_saved() -> None:
    async def body() -> None:
        run = FakeRun(save_takes=START_GRACE_S * 4)
        start = _Start(run, "Run script")  # type: ignore[arg-type]
        await start.note(44, AT)
        await asyncio.sleep(START_GRACE_S * 1.5)  # its save has begun and takes a while
        assert run.saved == []
        assert await start.with_end() is None
        assert run.saved == [("started", 44, AT)], "saved before the end is"

    asyncio.run(body())
