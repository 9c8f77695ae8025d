"""Worker health: online/offline is recorded on transitions only; checks always."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest

from domain.app import Shoal
from domain.errors import InvalidTransition
from domain.workers import CommsStyle, HealthStatus, Worker
from tests.unit.support import ALICE, events_after, head

Step = Callable[[Worker], None]


def online(w: Worker) -> None:
    w.came_online(actor=ALICE)


def offline(w: Worker) -> None:
    w.went_offline("no heartbeat for 90s", actor=ALICE)


def healthy(w: Worker) -> None:
    w.record_health(HealthStatus.HEALTHY, "disk ok", actor=ALICE)


def register(app: Shoal) -> UUID:
    return app.register_worker(
        name="w1", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.POLLING, actor=ALICE
    ).aggregate.id


def run(app: Shoal, worker_id: UUID, steps: list[Step]) -> list[str]:
    """Apply each step as its own command; the names of the events that were stored."""
    before = head(app)
    for step in steps:
        worker = app.get_worker(worker_id)
        step(worker)
        app.save(worker)
    return [type(e).__name__ for e in events_after(app, before)]


@pytest.mark.parametrize(
    ("steps", "recorded"),
    [
        ([online], ["CameOnline"]),
        ([online, online], ["CameOnline"]),
        # A worker whose agent never came online becomes unavailable once.
        ([offline, offline], ["WentOffline"]),
        ([online, offline], ["CameOnline", "WentOffline"]),
        ([online, offline, offline], ["CameOnline", "WentOffline"]),
        ([online, offline, online], ["CameOnline", "WentOffline", "CameOnline"]),
        ([healthy, healthy], ["HealthChecked", "HealthChecked"]),
    ],
    ids=[
        "online", "online-twice", "never-online-offline-twice", "online-offline",
        "offline-twice", "back-online", "checks-always-recorded",
    ],
)
def test_events_are_recorded_on_transitions_only(
    app: Shoal, steps: list[Step], recorded: list[str]
) -> None:
    assert run(app, register(app), steps) == recorded


@pytest.mark.parametrize(
    ("steps", "status", "detail"),
    [
        ([online], HealthStatus.UNKNOWN, ""),
        ([online, healthy], HealthStatus.HEALTHY, "disk ok"),
        ([online, healthy, offline], HealthStatus.UNAVAILABLE, "no heartbeat for 90s"),
        ([online, offline, online], HealthStatus.UNKNOWN, ""),
        ([online, healthy, offline, online], HealthStatus.UNKNOWN, ""),
    ],
    ids=["online", "checked", "went-offline", "back-online", "back-online-after-check"],
)
def test_health_status_follows_the_transitions(
    app: Shoal, steps: list[Step], status: HealthStatus, detail: str
) -> None:
    worker_id = register(app)

    run(app, worker_id, steps)

    w = app.get_worker(worker_id)
    assert (w.health_status, w.health_detail) == (status, detail)


def test_coming_online_keeps_a_health_check_result(app: Shoal) -> None:
    worker_id = register(app)

    run(app, worker_id, [healthy, online])

    assert app.get_worker(worker_id).health_status is HealthStatus.HEALTHY


@pytest.mark.parametrize(
    ("steps", "is_online"),
    [([online], True), ([online, offline], False), ([online, offline, online], True)],
)
def test_is_online_follows_the_transitions(
    app: Shoal, steps: list[Step], is_online: bool
) -> None:
    worker_id = register(app)

    run(app, worker_id, steps)

    assert app.get_worker(worker_id).is_online is is_online


@pytest.mark.parametrize(
    "step",
    [
        online,
        offline,
        healthy,
        lambda w: w.rename("w2", actor=ALICE),
        lambda w: w.disable(actor=ALICE),
        lambda w: w.deregister(actor=ALICE),
    ],
    ids=["online", "offline", "health", "rename", "disable", "deregister"],
)
def test_a_deregistered_worker_takes_no_more_changes(app: Shoal, step: Step) -> None:
    worker_id = register(app)
    app.deregister_worker(worker_id, actor=ALICE)
    worker = app.aggregate_state(worker_id)

    with pytest.raises(InvalidTransition):
        step(worker)
