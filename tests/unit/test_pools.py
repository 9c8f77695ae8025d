"""Worker pools: create, rename, change, delete, and their unique names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from domain.app import Shoal
from domain.app.pools import POOL
from domain.errors import Conflict, NotFound, Rejected
from domain.rules import MAX_DESCRIPTION_LENGTH
from domain.workers import CommsStyle
from tests.sshworkers import SSH
from tests.unit.support import ALICE, head, writes_nothing


def test_create_pool_stores_its_fields(app: Shoal) -> None:
    saved = app.create_pool(name="  Build  ", description="CI boxes", sort_order=5, actor=ALICE)

    pool = app.get_pool(saved.aggregate.id)
    assert (pool.name, pool.description, pool.sort_order) == ("Build", "CI boxes", 5)


def test_a_new_pool_is_not_the_default(app: Shoal) -> None:
    saved = app.create_pool(name="Build", actor=ALICE)

    assert app.get_pool(saved.aggregate.id).is_default is False


def test_create_pool_returns_the_position_of_its_last_event(app: Shoal) -> None:
    saved = app.create_pool(name="Build", actor=ALICE)

    assert saved.position == head(app)


@pytest.mark.parametrize("name_or_id", ["Build", "build", "BUILD"])
def test_resolve_pool_finds_a_pool_by_name_in_any_case(app: Shoal, name_or_id: str) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    assert app.resolve_pool(name_or_id).id == pool_id


def test_resolve_pool_finds_a_pool_by_id(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    assert app.resolve_pool(str(pool_id)).id == pool_id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "tab\there"},
        {"name": "Build", "description": "d" * (MAX_DESCRIPTION_LENGTH + 1)},
    ],
    ids=["empty", "blank", "too-long", "control-char", "long-description"],
)
def test_create_pool_rejects_bad_input_and_writes_nothing(app: Shoal, kwargs: dict[str, Any]) -> None:
    with writes_nothing(app), pytest.raises(Rejected):
        app.create_pool(actor=ALICE, **kwargs)


FULLWIDTH_BUILD = "\uff22\uff35\uff29\uff2c\uff24"


@pytest.mark.parametrize("second", ["Build", "build", "BUILD", "  Build ", FULLWIDTH_BUILD])
def test_a_taken_pool_name_is_a_conflict_and_writes_nothing(app: Shoal, second: str) -> None:
    app.create_pool(name="Build", actor=ALICE)

    with writes_nothing(app), pytest.raises(Conflict):
        app.create_pool(name=second, actor=ALICE)


def test_the_default_pool_name_is_taken_from_install(app: Shoal) -> None:
    with writes_nothing(app), pytest.raises(Conflict):
        app.create_pool(name="default worker pool", actor=ALICE)


def test_rename_pool_changes_its_name(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    app.update_pool(pool_id, name="Deploy", actor=ALICE)

    assert app.get_pool(pool_id).name == "Deploy"


def test_a_renamed_pools_old_name_is_free_again(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.update_pool(pool_id, name="Deploy", actor=ALICE)

    other = app.create_pool(name="build", actor=ALICE).aggregate

    assert app.resolve_pool("Build").id == other.id != pool_id


def test_a_renamed_pools_new_name_is_taken(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.update_pool(pool_id, name="Deploy", actor=ALICE)

    with writes_nothing(app), pytest.raises(Conflict):
        app.create_pool(name="DEPLOY", actor=ALICE)


def test_renaming_to_a_taken_name_is_a_conflict_and_writes_nothing(app: Shoal) -> None:
    app.create_pool(name="Deploy", actor=ALICE)
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_pool(pool_id, name="deploy", actor=ALICE)

    assert app.get_pool(pool_id).name == "Build"


def test_renaming_back_to_a_former_name_works(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.update_pool(pool_id, name="Deploy", actor=ALICE)

    app.update_pool(pool_id, name="Build", actor=ALICE)

    assert app.get_pool(pool_id).name == "Build"
    assert (app.owner_of(POOL, "Build"), app.owner_of(POOL, "Deploy")) == (pool_id, None)


def test_a_change_of_case_only_keeps_the_name_reserved(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    app.update_pool(pool_id, name="BUILD", actor=ALICE)

    assert app.get_pool(pool_id).name == "BUILD"
    assert app.owner_of(POOL, "build") == pool_id


def test_change_pool_details(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    app.update_pool(pool_id, description="new", sort_order=7, actor=ALICE)

    pool = app.get_pool(pool_id)
    assert (pool.name, pool.description, pool.sort_order) == ("Build", "new", 7)


def test_changing_only_the_sort_order_keeps_the_description(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", description="CI", actor=ALICE).aggregate.id

    app.update_pool(pool_id, sort_order=3, actor=ALICE)

    pool = app.get_pool(pool_id)
    assert (pool.description, pool.sort_order) == ("CI", 3)


def test_an_update_that_changes_nothing_writes_nothing(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", description="CI", actor=ALICE).aggregate.id

    with writes_nothing(app):
        app.update_pool(pool_id, name="Build", description="CI", sort_order=0, actor=ALICE)


def test_a_rejected_update_changes_nothing(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    too_long = "d" * (MAX_DESCRIPTION_LENGTH + 1)

    with writes_nothing(app), pytest.raises(Rejected):
        app.update_pool(pool_id, name="Deploy", description=too_long, actor=ALICE)

    assert app.resolve_pool("Build").id == pool_id


def test_deleting_the_default_pool_is_a_conflict(app: Shoal) -> None:
    with writes_nothing(app), pytest.raises(Conflict):
        app.delete_pool(app.default_pool_id(), actor=ALICE)


def test_deleting_a_pool_with_workers_is_a_conflict(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.register_worker(name="w1", pool_ids=(pool_id,), comms_style=CommsStyle.POLLING, actor=ALICE)

    with writes_nothing(app), pytest.raises(Conflict):
        app.delete_pool(pool_id, actor=ALICE)


def test_a_deleted_pool_is_not_found(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    app.delete_pool(pool_id, actor=ALICE)

    with pytest.raises(NotFound):
        app.get_pool(pool_id)


def test_deleting_a_pool_frees_its_name(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.delete_pool(pool_id, actor=ALICE)

    new_id = app.create_pool(name="BUILD", actor=ALICE).aggregate.id

    assert app.resolve_pool("build").id == new_id


def test_a_deleted_pool_cannot_be_found_by_its_name(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    app.delete_pool(pool_id, actor=ALICE)

    with pytest.raises(NotFound):
        app.resolve_pool("Build")


@pytest.mark.parametrize(
    "call",
    [
        lambda app, i: app.get_pool(i),
        lambda app, i: app.update_pool(i, name="X", actor=ALICE),
        lambda app, i: app.update_pool(i, is_default=True, actor=ALICE),
        lambda app, i: app.delete_pool(i, actor=ALICE),
    ],
    ids=["get", "update", "make-default", "delete"],
)
def test_an_unknown_pool_id_is_not_found(app: Shoal, call: Callable[..., Any]) -> None:
    with writes_nothing(app), pytest.raises(NotFound):
        call(app, uuid4())


def test_a_worker_id_is_not_a_pool(app: Shoal) -> None:
    worker = app.register_worker(
        name="w1", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.SSH, ssh=SSH,
        actor=ALICE,
    ).aggregate

    with pytest.raises(NotFound):
        app.get_pool(worker.id)
