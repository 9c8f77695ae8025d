"""Environments: create, rename, describe, delete, unique names, and 'in use' on delete."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from domain.app import Shoal
from domain.environments import Environment
from domain.errors import Conflict, NotFound, Rejected
from domain.rules import MAX_DESCRIPTION_LENGTH
from tests.unit.support import ALICE, BOB, events_after, head, replay, writes_nothing


def test_create_environment_stores_its_fields(app: Shoal) -> None:
    saved = app.create_environment(name="  Production ", description="live", actor=ALICE)

    environment = app.get_environment(saved.aggregate.id)
    assert (environment.name, environment.description) == ("Production", "live")
    assert environment.target_ids == frozenset()
    assert saved.position == head(app)


def test_every_event_records_its_actor(app: Shoal) -> None:
    before = head(app)
    environment_id = app.create_environment(name="Test", actor=ALICE).aggregate.id
    app.update_environment(environment_id, name="QA", description="for testers", actor=BOB)
    app.delete_environment(environment_id, actor=BOB)

    mine = [e for e in events_after(app, before) if e.originator_id == environment_id]
    assert [(type(e).__qualname__, e.actor) for e in mine] == [
        ("Environment.Created", ALICE),
        ("Environment.Renamed", BOB),
        ("Environment.Described", BOB),
        ("Environment.Deleted", BOB),
    ]


@pytest.mark.parametrize("name_or_id", ["Production", "production", "PRODUCTION"])
def test_resolve_environment_by_name_in_any_case(app: Shoal, name_or_id: str) -> None:
    environment_id = app.create_environment(name="Production", actor=ALICE).aggregate.id

    assert app.resolve_environment(name_or_id).id == environment_id


def test_resolve_environment_by_id(app: Shoal) -> None:
    environment_id = app.create_environment(name="Production", actor=ALICE).aggregate.id

    assert app.resolve_environment(str(environment_id)).id == environment_id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "  "},
        {"name": "x" * 201},
        {"name": "tab\there"},
        {"name": "Test", "description": "d" * (MAX_DESCRIPTION_LENGTH + 1)},
    ],
    ids=["empty", "blank", "too-long", "control-char", "long-description"],
)
def test_bad_input_is_rejected_and_writes_nothing(app: Shoal, kwargs: dict[str, Any]) -> None:
    with writes_nothing(app), pytest.raises(Rejected):
        app.create_environment(actor=ALICE, **kwargs)


@pytest.mark.parametrize("second", ["Production", "production", " PRODUCTION "])
def test_a_taken_name_is_a_conflict_and_writes_nothing(app: Shoal, second: str) -> None:
    app.create_environment(name="Production", actor=ALICE)

    with writes_nothing(app), pytest.raises(Conflict):
        app.create_environment(name=second, actor=ALICE)


def test_environment_and_pool_names_are_separate(app: Shoal) -> None:
    app.create_pool(name="Production", actor=ALICE)

    assert app.create_environment(name="Production", actor=ALICE).aggregate.name == "Production"


def test_renaming_frees_the_old_name_and_takes_the_new(app: Shoal) -> None:
    environment_id = app.create_environment(name="Test", actor=ALICE).aggregate.id
    app.update_environment(environment_id, name="QA", actor=ALICE)

    assert app.resolve_environment("QA").id == environment_id
    assert app.create_environment(name="Test", actor=ALICE).aggregate.id != environment_id
    with pytest.raises(Conflict):
        app.create_environment(name="qa", actor=ALICE)


def test_renaming_to_a_taken_name_is_a_conflict_and_writes_nothing(app: Shoal) -> None:
    app.create_environment(name="Test", actor=ALICE)
    environment_id = app.create_environment(name="QA", actor=ALICE).aggregate.id

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_environment(environment_id, name="TEST", actor=ALICE)


def test_an_update_that_changes_nothing_writes_nothing(app: Shoal) -> None:
    environment_id = app.create_environment(name="Test", description="d", actor=ALICE).aggregate.id

    with writes_nothing(app):
        app.update_environment(environment_id, name="Test", description="d", actor=ALICE)


def test_deleting_frees_the_name_and_the_environment_is_gone(app: Shoal) -> None:
    environment_id = app.create_environment(name="Test", actor=ALICE).aggregate.id
    app.delete_environment(environment_id, actor=ALICE)

    with pytest.raises(NotFound):
        app.get_environment(environment_id)
    with pytest.raises(NotFound):
        app.resolve_environment("Test")
    assert app.create_environment(name="TEST", actor=ALICE).aggregate.id != environment_id


def test_deleting_an_environment_a_target_uses_is_a_conflict_naming_it(app: Shoal) -> None:
    environment_id = app.create_environment(name="Production", actor=ALICE).aggregate.id
    app.create_target(name="eu-west", roles=("web",), environment_ids=(environment_id,), actor=ALICE)

    with writes_nothing(app), pytest.raises(Conflict, match="'eu-west'"):
        app.delete_environment(environment_id, actor=ALICE)


def test_the_aggregate_itself_refuses_to_delete_while_in_use() -> None:
    environment = Environment(name="Production", description="", actor=ALICE)
    environment.attach_target(uuid4(), ALICE)

    with pytest.raises(Conflict):
        environment.delete(ALICE)


def test_target_set_survives_a_replay(app: Shoal) -> None:
    environment_id = app.create_environment(name="Production", actor=ALICE).aggregate.id
    target = app.create_target(
        name="eu-west", roles=("web",), environment_ids=(environment_id,), actor=ALICE
    ).aggregate

    assert replay(app, environment_id).target_ids == frozenset({target.id})


def test_an_unknown_environment_id_is_not_found(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.update_environment(uuid4(), name="x", actor=ALICE)
    with pytest.raises(NotFound):
        app.delete_environment(uuid4(), actor=ALICE)


def test_a_pool_id_is_not_an_environment(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.get_environment(app.default_pool_id())
