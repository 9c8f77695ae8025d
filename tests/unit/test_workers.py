"""Workers: registration, pool membership, names, settings and deregistration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.app import Shoal
from domain.app.workers import WORKER
from domain.errors import Conflict, NotFound, Rejected
from domain.workers import DEFAULT_CAPACITY, CommsStyle, HealthStatus
from tests.unit.support import ALICE, writes_nothing


def register(app: Shoal, name: str = "w1", **kwargs: Any) -> UUID:
    kwargs.setdefault("pool_ids", (app.default_pool_id(),))
    kwargs.setdefault("comms_style", CommsStyle.POLLING)
    return app.register_worker(name=name, actor=ALICE, **kwargs).aggregate.id


def pool(app: Shoal, name: str) -> UUID:
    return app.create_pool(name=name, actor=ALICE).aggregate.id


def test_register_worker_stores_what_it_was_given(app: Shoal) -> None:
    p = pool(app, "Build")
    worker_id = register(
        app, " web-01 ", pool_ids=(p,), comms_style=CommsStyle.LISTENING,
        endpoint="https://web-01:10933", capacity=2,
    )

    w = app.get_worker(worker_id)
    assert (w.name, w.pool_ids, w.comms_style, w.endpoint, w.capacity) == (
        "web-01", (p,), CommsStyle.LISTENING, "https://web-01:10933", 2,
    )


def test_a_new_worker_is_enabled_offline_and_of_unknown_health(app: Shoal) -> None:
    w = app.get_worker(register(app))

    assert (w.is_disabled, w.is_online, w.health_status) == (False, False, HealthStatus.UNKNOWN)


def test_a_new_worker_gets_the_default_capacity(app: Shoal) -> None:
    assert app.get_worker(register(app)).capacity == DEFAULT_CAPACITY


def test_register_worker_adds_it_to_every_named_pool(app: Shoal) -> None:
    a, b = pool(app, "A"), pool(app, "B")

    worker_id = register(app, pool_ids=(a, b))

    assert worker_id in app.get_pool(a).member_ids
    assert worker_id in app.get_pool(b).member_ids


def test_register_worker_leaves_other_pools_alone(app: Shoal) -> None:
    a, b = pool(app, "A"), pool(app, "B")

    register(app, pool_ids=(a,))

    assert app.get_pool(b).member_ids == frozenset()


def test_register_worker_uses_the_default_policy_when_none_is_named(app: Shoal) -> None:
    assert app.get_worker(register(app)).machine_policy_id == app.default_policy_id()


def test_register_worker_uses_the_policy_it_names(app: Shoal) -> None:
    policy_id = app.create_policy(name="Fast", health_check_interval_s=60, actor=ALICE).aggregate.id

    assert app.get_worker(register(app, machine_policy_id=policy_id)).machine_policy_id == policy_id


@pytest.mark.parametrize(
    "bad",
    [
        lambda app: {"pool_ids": (uuid4(),)},
        lambda app: {"pool_ids": (app.default_pool_id(), uuid4())},
        lambda app: {"pool_ids": ()},
        lambda app: {"pool_ids": (app.default_pool_id(), app.default_pool_id())},
        lambda app: {"machine_policy_id": uuid4()},
        lambda app: {"machine_policy_id": app.default_pool_id()},
        lambda app: {"name": ""},
        lambda app: {"endpoint": "h" * 2001},
    ],
    ids=[
        "missing-pool", "one-pool-missing", "no-pools", "duplicate-pool",
        "missing-policy", "pool-id-as-policy", "empty-name", "long-endpoint",
    ],
)
def test_register_worker_rejects_bad_input_and_writes_nothing(app: Shoal, bad: Callable[..., Any]) -> None:
    with writes_nothing(app), pytest.raises(Rejected):
        register(app, **bad(app))


def test_a_deleted_pool_cannot_take_new_workers(app: Shoal) -> None:
    p = pool(app, "Old")
    app.delete_pool(p, actor=ALICE)

    with writes_nothing(app), pytest.raises(Rejected):
        register(app, pool_ids=(p,))


@pytest.mark.parametrize(
    ("capacity", "accepted"), [(-1, False), (0, False), (1, True), (1000, True), (1001, False)]
)
def test_register_worker_capacity_bounds(app: Shoal, capacity: int, accepted: bool) -> None:
    if accepted:
        assert app.get_worker(register(app, capacity=capacity)).capacity == capacity
    else:
        with writes_nothing(app), pytest.raises(Rejected):
            register(app, capacity=capacity)


@pytest.mark.parametrize(
    ("capacity", "accepted"), [(0, False), (1, True), (1000, True), (1001, False)]
)
def test_update_worker_capacity_bounds(app: Shoal, capacity: int, accepted: bool) -> None:
    worker_id = register(app)
    if accepted:
        app.update_worker(worker_id, capacity=capacity, actor=ALICE)
        assert app.get_worker(worker_id).capacity == capacity
    else:
        with writes_nothing(app), pytest.raises(Rejected):
            app.update_worker(worker_id, capacity=capacity, actor=ALICE)


@pytest.mark.parametrize("second", ["w1", "W1", " w1 "])
def test_a_taken_worker_name_is_a_conflict_and_writes_nothing(app: Shoal, second: str) -> None:
    register(app, "w1")

    with writes_nothing(app), pytest.raises(Conflict):
        register(app, second)


def test_update_pools_moves_membership_from_old_to_new_pool(app: Shoal) -> None:
    old, new = pool(app, "Old"), pool(app, "New")
    worker_id = register(app, pool_ids=(old,))

    app.update_worker(worker_id, pool_ids=(new,), actor=ALICE)

    assert worker_id not in app.get_pool(old).member_ids
    assert worker_id in app.get_pool(new).member_ids
    assert app.get_worker(worker_id).pool_ids == (new,)


def test_update_pools_keeps_membership_of_a_pool_named_again(app: Shoal) -> None:
    a, b = pool(app, "A"), pool(app, "B")
    worker_id = register(app, pool_ids=(a,))

    app.update_worker(worker_id, pool_ids=(a, b), actor=ALICE)

    assert worker_id in app.get_pool(a).member_ids
    assert worker_id in app.get_pool(b).member_ids


def test_update_pools_to_a_missing_pool_is_rejected_and_writes_nothing(app: Shoal) -> None:
    old = pool(app, "Old")
    worker_id = register(app, pool_ids=(old,))

    with writes_nothing(app), pytest.raises(Rejected):
        app.update_worker(worker_id, pool_ids=(uuid4(),), actor=ALICE)

    assert worker_id in app.get_pool(old).member_ids


def test_a_pool_a_worker_left_can_be_deleted(app: Shoal) -> None:
    old = pool(app, "Old")
    worker_id = register(app, pool_ids=(old,))
    app.update_worker(worker_id, pool_ids=(app.default_pool_id(),), actor=ALICE)

    app.delete_pool(old, actor=ALICE)

    with pytest.raises(NotFound):
        app.get_pool(old)


def test_renaming_a_worker_frees_its_old_name(app: Shoal) -> None:
    worker_id = register(app, "w1")

    app.update_worker(worker_id, name="w2", actor=ALICE)

    assert app.get_worker(worker_id).name == "w2"
    assert (app.owner_of(WORKER, "w1"), app.owner_of(WORKER, "W2")) == (None, worker_id)


def test_renaming_a_worker_to_a_taken_name_is_a_conflict(app: Shoal) -> None:
    register(app, "w1")
    worker_id = register(app, "w2")

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_worker(worker_id, name="W1", actor=ALICE)


@pytest.mark.parametrize(
    ("steps", "disabled"),
    [([True], True), ([True, False], False), ([False], False), ([True, True], True)],
)
def test_disable_and_enable_toggle_the_worker(app: Shoal, steps: list[bool], disabled: bool) -> None:
    worker_id = register(app)

    for is_disabled in steps:
        app.update_worker(worker_id, is_disabled=is_disabled, actor=ALICE)

    assert app.get_worker(worker_id).is_disabled is disabled


def test_disabling_a_disabled_worker_writes_nothing(app: Shoal) -> None:
    worker_id = register(app)
    app.update_worker(worker_id, is_disabled=True, actor=ALICE)

    with writes_nothing(app):
        app.update_worker(worker_id, is_disabled=True, actor=ALICE)


@pytest.mark.parametrize(
    "bad",
    [
        lambda app: {"pool_ids": ()},
        lambda app: {"pool_ids": (app.default_pool_id(), app.default_pool_id())},
        lambda app: {"pool_ids": (app.default_pool_id(), uuid4())},
        lambda app: {"machine_policy_id": uuid4()},
        lambda app: {"name": "  "},
        lambda app: {"name": "ok", "capacity": 0},
    ],
    ids=["no-pools", "duplicate-pool", "missing-pool", "missing-policy", "blank-name",
         "rename-with-bad-capacity"],
)
def test_update_worker_rejects_bad_input_and_changes_nothing(app: Shoal, bad: Callable[..., Any]) -> None:
    worker_id = register(app, "w1")

    with writes_nothing(app), pytest.raises(Rejected):
        app.update_worker(worker_id, actor=ALICE, **bad(app))

    assert app.owner_of(WORKER, "w1") == worker_id
    assert worker_id in app.get_pool(app.default_pool_id()).member_ids


def test_deregister_removes_the_worker_from_its_pools(app: Shoal) -> None:
    a, b = pool(app, "A"), pool(app, "B")
    worker_id = register(app, pool_ids=(a, b))

    app.deregister_worker(worker_id, actor=ALICE)

    assert app.get_pool(a).member_ids == app.get_pool(b).member_ids == frozenset()


def test_deregister_frees_the_workers_name(app: Shoal) -> None:
    worker_id = register(app, "w1")
    app.deregister_worker(worker_id, actor=ALICE)

    new_id = register(app, "W1")

    assert app.owner_of(WORKER, "w1") == new_id != worker_id


@pytest.mark.parametrize(
    "call",
    [
        lambda app, i: app.get_worker(i),
        lambda app, i: app.update_worker(i, name="x", actor=ALICE),
        lambda app, i: app.deregister_worker(i, actor=ALICE),
    ],
    ids=["get", "update", "deregister"],
)
def test_a_deregistered_worker_is_not_found(app: Shoal, call: Callable[..., Any]) -> None:
    worker_id = register(app)
    app.deregister_worker(worker_id, actor=ALICE)

    with writes_nothing(app), pytest.raises(NotFound):
        call(app, worker_id)


@pytest.mark.parametrize(
    "call",
    [
        lambda app, i: app.get_worker(i),
        lambda app, i: app.update_worker(i, is_disabled=True, actor=ALICE),
        lambda app, i: app.deregister_worker(i, actor=ALICE),
    ],
    ids=["get", "update", "deregister"],
)
def test_an_unknown_worker_id_is_not_found(app: Shoal, call: Callable[..., Any]) -> None:
    with pytest.raises(NotFound):
        call(app, uuid4())


def test_a_pool_id_is_not_a_worker(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.get_worker(app.default_pool_id())
