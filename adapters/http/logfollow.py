"""A task's log followed live, as Server-Sent Events: every line once, in order, then an
`end` event with the task's state.

The reads it makes (lines after a place, the task's state) are separate snapshots of the
read models, which go on moving between them. Once the task is seen ended, every line
was recorded before its end, so the lines after the last one sent are all there, but they
may be many: a chatty step's last batches can land between the read that found no more
lines and the read that found the task ended. They are sent in batches until none is
left, never cut at one read's limit. And while it runs, the follow sleeps until the read
models pass what its last read could see, so lines that land between that read and the
sleep are sent at once, not after the next change or keep-alive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from domain.plan import TaskState
from projections.tasklogs import format_line
from projections.watch import PositionWatch

LOG_BATCH = 2000
KEEPALIVE_S = 15.0

Place = tuple[int, int]  # (log position, index of the line within its batch)
ReadLines = Callable[[Place, int], Awaitable[list[dict[str, Any]]]]


async def follow_log(
    after: Place,
    read_lines: ReadLines,
    read_state: Callable[[], Awaitable[str | None]],
    watch: PositionWatch,
    disconnected: Callable[[], Awaitable[bool]],
    batch: int = LOG_BATCH,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """The SSE body: lines after ``after`` (``read_lines(after, limit)``) as the read
    models (``watch``) get them; ``read_state()`` is the task's state (None: not shown
    yet). A keep-alive comment goes out when nothing moves for ``keepalive_s``."""
    while not await disconnected():
        shown = watch.position  # the reads below include at least this much of the log
        lines = await read_lines(after, batch)
        for line in lines:
            after = (line["position"], line["idx"])
            yield _event(after, line)
        if len(lines) == batch:
            continue
        state = await read_state()
        if state is not None and TaskState(state).is_final:
            while rest := await read_lines(after, batch):
                for line in rest:
                    after = (line["position"], line["idx"])
                    yield _event(after, line)
            yield b"event: end\ndata: %s\n\n" % orjson.dumps({"state": state})
            return
        if not await watch.wait_async(shown + 1, keepalive_s):
            yield b": keep-alive\n\n"


def _event(place: Place, line: dict[str, Any]) -> bytes:
    payload = orjson.dumps({**line, "line": format_line(line)})
    return b"id: %d.%d\ndata: %s\n\n" % (place[0], place[1], payload)
