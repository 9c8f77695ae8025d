"""The order the dispatcher takes queued tasks in when the read model lags behind the
tasks this node has just queued (adapters.dispatch.dispatcher.queue_order)."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from adapters.dispatch.dispatcher import queue_order

A, B, C, D, E = (uuid4() for _ in range(5))
NAMES = {A: "A", B: "B", C: "C", D: "D", E: "E"}


def names(ids: list[UUID]) -> str:
    return "".join(NAMES[t] for t in ids)


@pytest.mark.parametrize(
    ("listed", "complete", "handed", "busy", "expected"),
    [
        # Nothing shown yet: what this node queued, oldest first by log position.
        ([], True, {C: 12, B: 11}, set(), "BC"),
        # Shown tasks are older than any the read model has not reached: they go first.
        ([A, B], True, {D: 20, C: 19}, set(), "ABCD"),
        # One it reached while we read is listed once, in its listed place.
        ([A, C], True, {C: 19, D: 20}, set(), "ACD"),
        # A list cut at its limit may leave out older tasks: none of ours jump them.
        ([A, B], False, {D: 20}, set(), "AB"),
        # Running here or claimed: not taken again, listed or ours.
        ([A, B], True, {C: 19, D: 20}, {A, C}, "BD"),
        ([], True, {}, set(), ""),
    ],
)
def test_queue_order(
    listed: list[UUID], complete: bool, handed: dict[UUID, int], busy: set[UUID], expected: str
) -> None:
    assert names(queue_order(listed, complete=complete, handed=handed, busy=busy)) == expected
