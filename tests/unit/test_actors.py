"""Every stored event says who caused it, for the audit log."""

from __future__ import annotations

import pytest

from domain.actors import SYSTEM, Actor, ActorKind
from domain.app import Shoal
from domain.keys import Permission
from domain.policies import CleanUp
from domain.workers import CommsStyle, HealthStatus
from tests.unit.support import ALICE, BOB, events_after, head

AGENT = Actor(ActorKind.AGENT, "agent-7", "web-01 agent")


def exercise(app: Shoal, actor: Actor) -> None:
    """One of (nearly) every command, all by ``actor``."""
    old_default = app.default_pool_id()
    pool = app.create_pool(name="Build", actor=actor).aggregate.id
    app.update_pool(pool, name="Builders", description="CI", sort_order=2, actor=actor)
    spare = app.create_pool(name="Spare", is_default=True, actor=actor).aggregate.id
    app.update_pool(old_default, is_default=True, actor=actor)
    app.delete_pool(spare, actor=actor)
    policy = app.create_policy(name="Fast", actor=actor).aggregate.id
    app.update_policy(
        policy, name="Quick", health_check_interval_s=60, cleanup=CleanUp.DELETE_UNAVAILABLE,
        cleanup_after_s=600, actor=actor,
    )
    worker = app.register_worker(
        name="w1", pool_ids=(pool,), comms_style=CommsStyle.LISTENING, actor=actor
    ).aggregate.id
    app.update_worker(
        worker, name="w2", pool_ids=(old_default,), is_disabled=True, capacity=8,
        machine_policy_id=policy, actor=actor,
    )
    live = app.get_worker(worker)
    live.came_online(actor=actor)
    live.record_health(HealthStatus.HEALTHY, "ok", actor=actor)
    live.went_offline("gone", actor=actor)
    app.save(live)
    app.deregister_worker(worker, actor=actor)
    key = app.create_key(name="ci", permissions=(Permission.TASK_VIEW,), actor=actor)[0]
    app.revoke_key(key.aggregate.id, actor=actor)


@pytest.mark.parametrize("actor", [ALICE, BOB, AGENT, SYSTEM], ids=lambda a: a.kind.value)
def test_every_event_carries_the_actor_of_its_command(app: Shoal, actor: Actor) -> None:
    before = head(app)

    exercise(app, actor)

    events = events_after(app, before)
    assert len(events) > 30
    assert [e for e in events if e.actor != actor] == []


def test_the_exercise_touches_every_kind_of_aggregate(app: Shoal) -> None:
    before = head(app)

    exercise(app, ALICE)

    kinds = {type(e).__qualname__.split(".")[0] for e in events_after(app, before)}
    assert kinds == {"WorkerPool", "Installation", "NameIndex", "MachinePolicy", "Worker", "ApiKey"}


def test_each_command_records_its_own_actor(app: Shoal) -> None:
    before = head(app)
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    middle = head(app)

    app.update_pool(pool_id, name="Builders", actor=BOB)

    assert {e.actor for e in events_after(app, before)[: middle - before]} == {ALICE}
    assert {e.actor for e in events_after(app, middle)} == {BOB}


def test_the_actor_comes_back_as_an_actor(app: Shoal) -> None:
    before = head(app)

    app.create_pool(name="Build", actor=AGENT)

    actors = [e.actor for e in events_after(app, before)]
    assert actors
    assert all(type(a) is Actor and a.kind is ActorKind.AGENT for a in actors)


def test_actor_as_dict_is_plain_json() -> None:
    assert AGENT.as_dict() == {"kind": "agent", "id": "agent-7", "name": "web-01 agent"}
