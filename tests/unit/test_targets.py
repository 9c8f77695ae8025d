"""Deployment targets: create, change, delete; roles, environments and default pool
rules; the environment and pool usage saved with each change."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.app import Shoal
from domain.errors import Conflict, NotFound, Rejected
from domain.targets import MAX_ROLE_LENGTH, MAX_ROLES, TargetKind, clean_roles
from tests.unit.support import (
    ALICE,
    BOB,
    events_after,
    head,
    originators_after,
    replay,
    writes_nothing,
)


@pytest.fixture
def prod(app: Shoal) -> UUID:
    return app.create_environment(name="Production", actor=ALICE).aggregate.id


@pytest.fixture
def test_env(app: Shoal) -> UUID:
    return app.create_environment(name="Test", actor=ALICE).aggregate.id


def _target(app: Shoal, env: UUID, **kwargs: Any) -> UUID:
    fields: dict[str, Any] = {"name": "eu-west", "roles": ("web",), "environment_ids": (env,)}
    return app.create_target(actor=ALICE, **{**fields, **kwargs}).aggregate.id


# -- roles (a pure rule) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (("web",), ("web",)),
        ((" web ", "db"), ("web", "db")),
        (("web", "WEB", "db", "web"), ("web", "db")),
        (("r",) * 80, ("r",)),
    ],
)
def test_clean_roles_strips_and_drops_repeats_keeping_order(
    given: tuple[str, ...], kept: tuple[str, ...]
) -> None:
    assert clean_roles(given) == kept


@pytest.mark.parametrize(
    "roles",
    [(), ("",), ("web", "  "), ("x" * (MAX_ROLE_LENGTH + 1),), ("a\nb",),
     tuple(f"r{i}" for i in range(MAX_ROLES + 1))],
    ids=["none", "empty", "blank", "too-long", "control-char", "too-many"],
)
def test_clean_roles_rejects(roles: tuple[str, ...]) -> None:
    with pytest.raises(Rejected):
        clean_roles(roles)


# -- create ---------------------------------------------------------------------------------


def test_create_target_stores_its_fields(app: Shoal, prod: UUID, test_env: UUID) -> None:
    pool = app.default_pool_id()
    saved = app.create_target(
        name=" eu-west ", roles=("web", "db"), environment_ids=(prod, test_env),
        default_worker_pool_id=pool, is_disabled=True, actor=ALICE,
    )

    target = app.get_target(saved.aggregate.id)
    assert (target.name, target.kind, target.roles) == ("eu-west", TargetKind.CLOUD_REGION, ("web", "db"))
    assert target.environment_ids == (prod, test_env)
    assert (target.default_worker_pool_id, target.is_disabled) == (pool, True)
    assert saved.position == head(app)


def test_create_saves_the_target_its_environments_pool_and_name_together(
    app: Shoal, prod: UUID, test_env: UUID
) -> None:
    pool = app.create_pool(name="Regional", actor=ALICE).aggregate.id
    before = head(app)
    target = _target(app, prod, environment_ids=(prod, test_env), default_worker_pool_id=pool)

    assert {target, prod, test_env, pool} <= originators_after(app, before)
    assert app.get_environment(prod).target_ids == frozenset({target})
    assert app.get_environment(test_env).target_ids == frozenset({target})
    assert app.get_pool(pool).target_ids == frozenset({target})
    assert all(e.actor == ALICE for e in events_after(app, before))


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"roles": ()},
        {"roles": ("",)},
        {"environment_ids": ()},
        {"environment_ids": "unknown"},
        {"environment_ids": "twice"},
        {"default_worker_pool_id": "unknown"},
        {"kind": "server"},
    ],
    ids=["no-name", "no-roles", "empty-role", "no-environment", "unknown-environment",
         "environment-twice", "unknown-pool", "bad-kind"],
)
def test_bad_input_is_rejected_and_writes_nothing(
    app: Shoal, prod: UUID, change: dict[str, Any]
) -> None:
    values = {"unknown": (uuid4(),), "twice": (prod, prod)}
    if change.get("environment_ids") in values:
        change = {"environment_ids": values[change["environment_ids"]]}
    if change.get("default_worker_pool_id") == "unknown":
        change = {"default_worker_pool_id": uuid4()}
    with writes_nothing(app), pytest.raises(Rejected):
        _target(app, prod, **change)


def test_unknown_environment_is_rejected_not_missing(app: Shoal) -> None:
    with pytest.raises(Rejected, match="environment"):
        app.create_target(name="t", roles=("web",), environment_ids=(uuid4(),), actor=ALICE)


def test_a_deleted_pool_is_not_a_default_pool(app: Shoal, prod: UUID) -> None:
    pool = app.create_pool(name="Gone", actor=ALICE).aggregate.id
    app.delete_pool(pool, actor=ALICE)

    with writes_nothing(app), pytest.raises(Rejected):
        _target(app, prod, default_worker_pool_id=pool)


@pytest.mark.parametrize("second", ["eu-west", "EU-WEST", " eu-west "])
def test_a_taken_target_name_is_a_conflict_and_writes_nothing(
    app: Shoal, prod: UUID, second: str
) -> None:
    _target(app, prod)

    with writes_nothing(app), pytest.raises(Conflict):
        _target(app, prod, name=second)


def test_resolve_target_by_name_or_id(app: Shoal, prod: UUID) -> None:
    target = _target(app, prod)

    assert app.resolve_target("EU-West").id == target
    assert app.resolve_target(str(target)).id == target
    with pytest.raises(NotFound):
        app.resolve_target("nowhere")


# -- update ---------------------------------------------------------------------------------


def test_update_changes_every_field_with_its_own_event(
    app: Shoal, prod: UUID, test_env: UUID
) -> None:
    target = _target(app, prod)
    before = head(app)

    app.update_target(
        target, name="us-east", roles=("db",), environment_ids=(test_env,),
        default_worker_pool_id=app.default_pool_id(), is_disabled=True, actor=BOB,
    )

    mine = [e for e in events_after(app, before) if e.originator_id == target]
    assert [type(e).__qualname__ for e in mine] == [
        "DeploymentTarget.Renamed", "DeploymentTarget.RolesChanged",
        "DeploymentTarget.EnvironmentsChanged", "DeploymentTarget.DefaultPoolChanged",
        "DeploymentTarget.Disabled",
    ]
    assert all(e.actor == BOB for e in events_after(app, before))
    assert replay(app, target).name == "us-east"
    assert app.resolve_target("us-east").id == target
    assert app.create_target(
        name="eu-west", roles=("web",), environment_ids=(prod,), actor=ALICE
    ).aggregate.id != target


def test_moving_environments_moves_the_usage(app: Shoal, prod: UUID, test_env: UUID) -> None:
    target = _target(app, prod)

    app.update_target(target, environment_ids=(test_env,), actor=ALICE)

    assert app.get_environment(prod).target_ids == frozenset()
    assert app.get_environment(test_env).target_ids == frozenset({target})
    app.delete_environment(prod, actor=ALICE)


def test_changing_and_clearing_the_default_pool_moves_the_usage(app: Shoal, prod: UUID) -> None:
    first = app.create_pool(name="First", actor=ALICE).aggregate.id
    second = app.create_pool(name="Second", actor=ALICE).aggregate.id
    target = _target(app, prod, default_worker_pool_id=first)

    app.update_target(target, default_worker_pool_id=second, actor=ALICE)
    assert (app.get_pool(first).target_ids, app.get_pool(second).target_ids) == (
        frozenset(), frozenset({target})
    )
    app.update_target(target, default_worker_pool_id=None, actor=ALICE)

    assert app.get_target(target).default_worker_pool_id is None
    assert app.get_pool(second).target_ids == frozenset()


def test_leaving_the_default_pool_out_keeps_it(app: Shoal, prod: UUID) -> None:
    target = _target(app, prod, default_worker_pool_id=app.default_pool_id())

    app.update_target(target, roles=("db",), actor=ALICE)

    assert app.get_target(target).default_worker_pool_id == app.default_pool_id()


def test_an_update_that_changes_nothing_writes_nothing(app: Shoal, prod: UUID) -> None:
    target = _target(app, prod)

    with writes_nothing(app):
        app.update_target(
            target, name="eu-west", roles=("web", "WEB"), environment_ids=(prod,),
            default_worker_pool_id=None, is_disabled=False, actor=ALICE,
        )


def test_a_rejected_update_changes_nothing(app: Shoal, prod: UUID, test_env: UUID) -> None:
    target = _target(app, prod)

    with writes_nothing(app), pytest.raises(Rejected):
        app.update_target(target, name="renamed", environment_ids=(test_env, uuid4()), actor=ALICE)

    assert app.get_target(target).environment_ids == (prod,)
    assert app.resolve_target("eu-west").id == target


def test_enable_again(app: Shoal, prod: UUID) -> None:
    target = _target(app, prod, is_disabled=True)

    app.update_target(target, is_disabled=False, actor=ALICE)

    assert app.get_target(target).is_disabled is False


# -- delete ---------------------------------------------------------------------------------


def test_deleting_a_target_frees_its_name_environments_and_pool(app: Shoal, prod: UUID) -> None:
    pool = app.create_pool(name="Regional", actor=ALICE).aggregate.id
    target = _target(app, prod, default_worker_pool_id=pool)

    app.delete_target(target, actor=BOB)

    with pytest.raises(NotFound):
        app.get_target(target)
    app.delete_environment(prod, actor=ALICE)
    app.delete_pool(pool, actor=ALICE)
    env = app.create_environment(name="Production", actor=ALICE).aggregate.id
    assert _target(app, env) != target


def test_deleting_a_targets_default_pool_is_a_conflict_naming_it(app: Shoal, prod: UUID) -> None:
    pool = app.create_pool(name="Regional", actor=ALICE).aggregate.id
    _target(app, prod, default_worker_pool_id=pool)

    with writes_nothing(app), pytest.raises(Conflict, match="'eu-west'"):
        app.delete_pool(pool, actor=ALICE)


def test_an_unknown_target_is_not_found(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.update_target(uuid4(), name="x", actor=ALICE)
    with pytest.raises(NotFound):
        app.delete_target(uuid4(), actor=ALICE)
