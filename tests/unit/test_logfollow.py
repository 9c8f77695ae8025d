"""Following a task's log: every line once, in order, then the end, even when many lines
land between the read that caught up and the read that saw the task end; and lines that
land while it looks are sent at once, not after the next keep-alive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from adapters.http.logfollow import Place, follow_log
from projections.watch import PositionWatch


class ReadModels:
    """A task's log and state as the read models show them, moving on between reads as
    the projector would: ``landing`` lines land just before the task's state is next read
    (after the read that found no more lines), with the task's end when ``ends``."""

    def __init__(self, shown: int, landing: int, ends: bool = True) -> None:
        self.lines = [{"position": 10 + i // 5, "idx": i % 5, "step": "Run script",
                       "at": "2026-12-07T22:00:00.000+00:00", "stream": "stdout", "text": str(i)}
                      for i in range(shown + landing)]
        self.shown = shown
        self.state = "executing"
        self.ends = ends
        self.watch = PositionWatch(self._position())

    def _position(self) -> int:
        return int(self.lines[self.shown - 1]["position"]) if self.shown else 1

    async def read_lines(self, after: Place, limit: int) -> list[dict[str, Any]]:
        later = [line for line in self.lines[:self.shown] if (line["position"], line["idx"]) > after]
        return later[:limit]

    async def read_state(self) -> str:
        self.shown = len(self.lines)
        self.watch.advance(self._position())
        if self.ends:
            self.state = "success"
        return self.state


async def _connected() -> bool:
    return False


async def _collect(models: ReadModels, after: Place = (0, -1), limit: int = 50) -> list[bytes]:
    return [event async for event in follow_log(
        after, models.read_lines, models.read_state, models.watch, _connected, batch=limit,
        keepalive_s=0.05,
    )]


def _texts(events: list[bytes]) -> list[str]:
    return [orjson.loads(e.split(b"data: ", 1)[1])["text"] for e in events if e.startswith(b"id: ")]


def test_lines_that_land_before_the_end_is_seen_are_all_sent_before_the_end() -> None:
    # 30 shown, then 1,000 more (many reads' worth) land with the task's end.
    events = asyncio.run(_collect(ReadModels(shown=30, landing=1000)))
    assert _texts(events) == [str(i) for i in range(1030)]
    assert events[-1] == b'event: end\ndata: {"state":"success"}\n\n'
    assert sum(e.startswith(b"event: end") for e in events) == 1


def test_a_follow_resumes_after_the_last_line_received() -> None:
    events = asyncio.run(_collect(ReadModels(shown=0, landing=250), after=(39, 4)))
    assert _texts(events) == [str(i) for i in range(150, 250)]  # line 149 was the last received
    assert next(e for e in events if e.startswith(b"id: ")).startswith(b"id: 40.0\n")


def test_lines_that_land_while_it_looks_are_sent_at_once_then_keep_alives() -> None:
    models = ReadModels(shown=5, landing=20, ends=False)

    async def run() -> tuple[list[bytes], float]:
        stream = follow_log((0, -1), models.read_lines, models.read_state, models.watch,
                            _connected, batch=50, keepalive_s=5.0)
        started = time.monotonic()
        got = [await anext(stream) for _ in range(25)]  # the 20 landed during the first look
        took = time.monotonic() - started
        models.ends = True
        models.watch.advance(models.watch.position + 1)  # the task's end
        got += [event async for event in stream]
        return got, took

    events, took = asyncio.run(run())
    assert took < 1.0, f"lines that had landed waited {took:.1f}s for the next change"
    assert _texts(events) == [str(i) for i in range(25)]
    assert events[-1].startswith(b"event: end")


def test_a_quiet_running_task_gets_keep_alives() -> None:
    models = ReadModels(shown=3, landing=0, ends=False)

    async def run() -> list[bytes]:
        stream = follow_log((0, -1), models.read_lines, models.read_state, models.watch,
                            _connected, batch=50, keepalive_s=0.02)
        return [await anext(stream) for _ in range(5)]

    assert asyncio.run(run())[3:] == [b": keep-alive\n\n"] * 2
