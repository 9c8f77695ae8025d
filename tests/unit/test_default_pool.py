"""The default pool: there is exactly one at all times, and moving it is one save."""

from __future__ import annotations

from uuid import UUID

import pytest

from domain.app import Shoal
from domain.errors import Conflict
from domain.installation import INSTALLATION_ID
from tests.unit.support import (
    ALICE,
    SaveSpy,
    head,
    originators_after,
    replay,
    writes_nothing,
)


def defaults(app: Shoal, pool_ids: list[UUID]) -> list[UUID]:
    """Which of these pools say they are the default."""
    return [i for i in pool_ids if app.get_pool(i).is_default]


def test_create_pool_as_default_makes_it_the_default(app: Shoal) -> None:
    saved = app.create_pool(name="Build", is_default=True, actor=ALICE)

    assert app.get_pool(saved.aggregate.id).is_default is True
    assert app.default_pool_id() == saved.aggregate.id


def test_create_pool_as_default_clears_the_old_default(app: Shoal) -> None:
    old_id = app.default_pool_id()

    app.create_pool(name="Build", is_default=True, actor=ALICE)

    assert app.get_pool(old_id).is_default is False


def test_create_pool_as_default_is_one_save_of_all_three_aggregates(app: Shoal) -> None:
    old_id = app.default_pool_id()
    before = head(app)
    spy = SaveSpy(app)

    saved = app.create_pool(name="Build", is_default=True, actor=ALICE)

    assert spy.positions == [saved.position] == [head(app)]
    assert {saved.aggregate.id, old_id, INSTALLATION_ID} <= originators_after(app, before)


def test_update_pool_to_default_moves_the_flag(app: Shoal) -> None:
    old_id = app.default_pool_id()
    new_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    app.update_pool(new_id, is_default=True, actor=ALICE)

    assert (app.get_pool(new_id).is_default, app.get_pool(old_id).is_default) == (True, False)
    assert app.default_pool_id() == new_id


def test_update_pool_to_default_is_one_save_of_all_three_aggregates(app: Shoal) -> None:
    old_id = app.default_pool_id()
    new_id = app.create_pool(name="Build", actor=ALICE).aggregate.id
    before = head(app)
    spy = SaveSpy(app)

    saved = app.update_pool(new_id, is_default=True, actor=ALICE)

    assert spy.positions == [saved.position] == [head(app)]
    assert originators_after(app, before) == {new_id, old_id, INSTALLATION_ID}


def test_making_the_default_pool_default_again_writes_nothing(app: Shoal) -> None:
    with writes_nothing(app):
        app.update_pool(app.default_pool_id(), is_default=True, actor=ALICE)


def test_clearing_the_default_flag_is_a_conflict_and_writes_nothing(app: Shoal) -> None:
    default_id = app.default_pool_id()

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_pool(default_id, is_default=False, actor=ALICE)

    assert app.get_pool(default_id).is_default is True


def test_a_conflicting_update_also_drops_its_other_changes(app: Shoal) -> None:
    default_id = app.default_pool_id()

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_pool(default_id, name="Renamed", is_default=False, actor=ALICE)

    assert app.get_pool(default_id).name == "Default Worker Pool"
    assert app.owner_of("pool", "Renamed") is None


def test_clearing_the_flag_of_a_non_default_pool_writes_nothing(app: Shoal) -> None:
    pool_id = app.create_pool(name="Build", actor=ALICE).aggregate.id

    with writes_nothing(app):
        app.update_pool(pool_id, is_default=False, actor=ALICE)


def test_the_former_default_pool_can_be_deleted(app: Shoal) -> None:
    old_id = app.default_pool_id()
    app.create_pool(name="Build", is_default=True, actor=ALICE)

    app.delete_pool(old_id, actor=ALICE)

    assert app.aggregate_state(old_id).is_deleted is True


def test_the_new_default_pool_cannot_be_deleted(app: Shoal) -> None:
    new_id = app.create_pool(name="Build", is_default=True, actor=ALICE).aggregate.id

    with writes_nothing(app), pytest.raises(Conflict):
        app.delete_pool(new_id, actor=ALICE)


def test_exactly_one_default_through_a_series_of_moves(app: Shoal) -> None:
    ids = [app.default_pool_id()]
    ids += [app.create_pool(name=f"P{n}", actor=ALICE).aggregate.id for n in range(3)]
    ids.append(app.create_pool(name="P3", is_default=True, actor=ALICE).aggregate.id)

    for target in [ids[1], ids[2], ids[2], ids[0], ids[4], ids[3]]:
        app.update_pool(target, is_default=True, actor=ALICE)
        assert defaults(app, ids) == [target] == [app.default_pool_id()]


def test_the_moved_flag_survives_a_replay_from_the_stored_events(app: Shoal) -> None:
    old_id = app.default_pool_id()
    new_id = app.create_pool(name="Build", is_default=True, actor=ALICE).aggregate.id

    assert (replay(app, new_id).is_default, replay(app, old_id).is_default) == (True, False)
    assert replay(app, INSTALLATION_ID).default_pool_id == new_id
