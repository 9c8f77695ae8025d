"""The event store itself: events keep their types across a reopen, names stay unique
under racing writers, and an unreachable PostgreSQL is reported without secrets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from adapters.store import ApplicationLog, StoreUnavailable, check_postgres
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.errors import Conflict
from domain.keys import ApiKey, Permission
from domain.policies import CleanUp, Connectivity, MachinePolicy, PolicySettings
from domain.pools import WorkerPool
from domain.workers import CommsStyle, Worker
from tests.helpers import TESTER, rid
from tests.sshworkers import SSH

pytestmark = pytest.mark.integration

AGENT = Actor(ActorKind.AGENT, "agent-7", "build agent 7")


def all_events(app: Shoal) -> list[tuple[int, Any]]:
    log = ApplicationLog(app)
    return list(log.read(0, 1_000_000))


def record_saves(app: Shoal) -> list[Any]:
    """Keep every event this Application saves, as the objects it saved."""
    saved: list[Any] = []
    real_save = app.save

    def spy(*aggregates: Any, **kwargs: Any) -> Any:
        recordings = real_save(*aggregates, **kwargs)
        saved.extend(r.domain_event for r in recordings)
        return recordings

    app.save = spy  # type: ignore[method-assign]
    return saved


def test_events_keep_their_types_after_reopening_the_store(
    app: Shoal, new_app: Callable[..., Shoal]
) -> None:
    saved = record_saves(app)
    pool_a = app.create_pool(name=rid("pool"), sort_order=3, actor=TESTER).aggregate
    pool_b = app.create_pool(name=rid("pool"), actor=AGENT).aggregate
    policy = app.create_policy(
        name=rid("policy"), health_check_interval_s=90,
        connectivity=Connectivity.MAY_BE_OFFLINE, cleanup=CleanUp.DELETE_UNAVAILABLE,
        cleanup_after_s=600, actor=TESTER,
    ).aggregate
    worker = app.register_worker(
        name=rid("worker"), pool_ids=(pool_b.id, pool_a.id), comms_style=CommsStyle.SSH,
        endpoint="ssh://deploy@10.0.0.5:22", machine_policy_id=policy.id, capacity=2,
        ssh=SSH, actor=AGENT,
    ).aggregate
    app.update_worker(worker.id, is_disabled=True, capacity=3, actor=TESTER)
    (key, _text) = app.create_key(
        name=rid("key"), permissions=(Permission.WORKER_VIEW, Permission.TASK_CREATE),
        actor=TESTER,
    )
    assert len(saved) > 10

    reopened = new_app()
    read_back = [event for _, event in all_events(reopened)]
    by_id = {(e.originator_id, e.originator_version): e for e in read_back}
    for original in saved:
        again = by_id[(original.originator_id, original.originator_version)]
        assert again == original
        assert type(again) is type(original)

    registered = next(e for e in read_back if isinstance(e, Worker.Registered))
    assert registered.pool_ids == (pool_b.id, pool_a.id)
    assert type(registered.pool_ids) is tuple
    assert all(type(i) is UUID for i in registered.pool_ids)
    assert registered.comms_style is CommsStyle.SSH
    assert type(registered.machine_policy_id) is UUID
    assert registered.actor == AGENT and type(registered.actor) is Actor
    assert registered.actor.kind is ActorKind.AGENT
    assert type(registered.timestamp) is datetime and registered.timestamp.tzinfo is not None

    created = next(e for e in read_back if isinstance(e, MachinePolicy.Created)
                   and e.originator_id == policy.id)
    assert created.settings.connectivity is Connectivity.MAY_BE_OFFLINE
    assert created.settings.cleanup is CleanUp.DELETE_UNAVAILABLE
    assert type(created.settings) is PolicySettings
    assert created.settings.cleanup_after_s == 600

    key_created = next(e for e in read_back if isinstance(e, ApiKey.Created)
                       and e.originator_id == key.aggregate.id)
    assert key_created.permissions == (Permission.WORKER_VIEW, Permission.TASK_CREATE)

    # Aggregates rebuilt by the second instance agree with the first.
    again = reopened.get_worker(worker.id)
    assert (again.name, again.pool_ids, again.capacity, again.is_disabled) == (
        worker.name, (pool_b.id, pool_a.id), 3, True,
    )
    assert reopened.get_pool(pool_a.id).member_ids == frozenset({worker.id})
    assert isinstance(reopened.get_pool(pool_a.id), WorkerPool)


def test_racing_creates_of_one_name_let_exactly_one_win(
    app: Shoal, new_app: Callable[..., Shoal]
) -> None:
    # What one create adds to the log, measured on a name nobody races for.
    before = len(all_events(app))
    app.create_pool(name=rid("solo"), actor=TESTER)
    one_create = len(all_events(app)) - before

    contenders = [new_app(pg_pool_size=2) for _ in range(8)]
    name = rid("contested")
    barrier = threading.Barrier(len(contenders))
    outcomes: list[object] = [None] * len(contenders)
    before = len(all_events(app))

    def create(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes[i] = contenders[i].create_pool(name=name, actor=TESTER).aggregate.id
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(contenders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    winners = [o for o in outcomes if isinstance(o, UUID)]
    losers = [o for o in outcomes if not isinstance(o, UUID)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in losers), outcomes
    assert len(all_events(app)) - before == one_create
    assert app.resolve_pool(name).id == winners[0]


def test_thirty_workers_registering_into_one_pool_at_once_all_get_in(app: Shoal) -> None:
    """An autoscaling group starting thirty agents at once, against one server: every
    registration writes the pool, and none is turned away for losing races to the rest
    (before their retries took turns, about a third answered 409)."""
    pool_id = app.create_pool(name=rid("scaled"), actor=TESTER).aggregate.id
    barrier = threading.Barrier(30)
    outcomes: list[object] = [None] * 30

    def register(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes[i] = app.register_worker(
                name=rid(f"scaled-{i}"), pool_ids=(pool_id,), comms_style=CommsStyle.POLLING,
                actor=TESTER,
            ).aggregate.id
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=register, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    turned_away = [o for o in outcomes if not isinstance(o, UUID)]
    assert turned_away == []
    assert app.get_pool(pool_id).member_ids == frozenset(outcomes)


def test_unreachable_postgres_is_named_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        check_postgres("postgresql://u:secretpw@127.0.0.1:1/db")
    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "secretpw" not in message
