"""Following a task's log: every line once, in order, then the end, even when many lines
land between the read that caught up and the read that saw the task end."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from adapters.http.logfollow import Place, follow_log


class ReadModels:
    """A task's log and state as the read models show them, moving on between reads as
    the projector would: ``landing`` lines and the task's end land together, just before
    its state is next read (after the read that found no more lines)."""

    def __init__(self, shown: int, landing: int, ends: bool = True) -> None:
        self.lines = [{"position": 10 + i // 100, "idx": i % 100, "step": "Run script",
                       "at": "2026-12-07T22:00:00.000+00:00", "stream": "stdout", "text": str(i)}
                      for i in range(shown + landing)]
        self.shown = shown
        self.state = "executing"
        self.ends = ends
        self.waits = 0

    async def read_lines(self, after: Place, limit: int) -> list[dict[str, Any]]:
        later = [line for line in self.lines[:self.shown] if (line["position"], line["idx"]) > after]
        return later[:limit]

    async def read_state(self) -> str:
        if self.ends:
            self.shown, self.state = len(self.lines), "success"
        return self.state

    async def wait_for_more(self) -> bool:
        self.waits += 1
        return self.waits > 1  # nothing moves the first time: a keep-alive goes out


async def _collect(models: ReadModels, after: Place = (0, -1), limit: int = 50) -> list[bytes]:
    async def connected() -> bool:
        return False

    return [event async for event in follow_log(
        after, models.read_lines, models.read_state, models.wait_for_more, connected, batch=limit,
    )]


def _texts(events: list[bytes]) -> list[str]:
    return [orjson.loads(e.split(b"data: ", 1)[1])["text"] for e in events if e.startswith(b"id: ")]


def test_lines_that_land_before_the_end_is_seen_are_all_sent_before_the_end() -> None:
    # 30 shown, then 1,000 more (many reads' worth) land with the task's end.
    models = ReadModels(shown=30, landing=1000)
    events = asyncio.run(_collect(models))
    assert _texts(events) == [str(i) for i in range(1030)]
    assert events[-1] == b'event: end\ndata: {"state":"success"}\n\n'
    assert sum(e.startswith(b"event: end") for e in events) == 1


def test_a_follow_resumes_after_the_last_line_received() -> None:
    models = ReadModels(shown=0, landing=250)
    events = asyncio.run(_collect(models, after=(11, 49)))  # line 149 was the last received
    assert _texts(events) == [str(i) for i in range(150, 250)]
    assert next(e for e in events if e.startswith(b"id: ")).startswith(b"id: 11.50\n")


def test_a_quiet_running_task_gets_keep_alives_until_it_ends() -> None:
    models = ReadModels(shown=5, landing=0, ends=False)

    async def run() -> list[bytes]:
        stream = follow_log((0, -1), models.read_lines, models.read_state,
                            models.wait_for_more, _never_disconnected, batch=50)
        got = [await anext(stream) for _ in range(6)]  # five lines, one keep-alive
        models.ends = True
        got += [event async for event in stream]
        return got

    events = asyncio.run(run())
    assert b": keep-alive\n\n" in events
    assert _texts(events) == ["0", "1", "2", "3", "4"]
    assert events[-1].startswith(b"event: end")


async def _never_disconnected() -> bool:
    return False
