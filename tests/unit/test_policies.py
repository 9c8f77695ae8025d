"""Machine policies: defaults, validation, partial updates and unique names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.app import Shoal
from domain.app.policies import DEFAULT_INTERVAL_S, POLICY
from domain.errors import Conflict, NotFound, Rejected
from domain.policies import (
    DEFAULT_HEALTH_SCRIPT,
    MAX_INTERVAL_S,
    MAX_SCRIPT_BYTES,
    CleanUp,
    Connectivity,
)
from tests.unit.support import ALICE, events_after, head, writes_nothing

FIELDS = (
    "name", "description", "health_check_interval_s", "health_check_script",
    "connectivity", "cleanup", "cleanup_after_s",
)

BAD_VALUES = [
    {"health_check_interval_s": 9},
    {"health_check_interval_s": MAX_INTERVAL_S + 1},
    {"health_check_interval_s": 0},
    {"health_check_script": ""},
    {"health_check_script": " \n\t "},
    {"health_check_script": "x" * (MAX_SCRIPT_BYTES + 1)},
    {"health_check_script": "é" * (MAX_SCRIPT_BYTES // 2 + 1)},
    {"cleanup": CleanUp.DELETE_UNAVAILABLE},
    {"cleanup": CleanUp.DELETE_UNAVAILABLE, "cleanup_after_s": 59},
    {"name": ""},
    {"description": "d" * 2001},
]
BAD_IDS = [
    "interval-9s", "interval-over-a-week", "interval-0", "empty-script", "blank-script",
    "script-too-big", "script-too-many-bytes", "delete-without-delay", "delete-after-59s",
    "empty-name", "long-description",
]


def fields_of(app: Shoal, policy_id: UUID) -> dict[str, Any]:
    policy = app.get_policy(policy_id)
    return {f: getattr(policy, f) for f in FIELDS}


def create(app: Shoal, name: str = "Fast", **kwargs: Any) -> UUID:
    return app.create_policy(name=name, actor=ALICE, **kwargs).aggregate.id


def test_create_policy_fills_in_the_defaults(app: Shoal) -> None:
    assert fields_of(app, create(app, " Fast ")) == {
        "name": "Fast",
        "description": "",
        "health_check_interval_s": DEFAULT_INTERVAL_S,
        "health_check_script": DEFAULT_HEALTH_SCRIPT,
        "connectivity": Connectivity.EXPECTED_ONLINE,
        "cleanup": CleanUp.KEEP,
        "cleanup_after_s": None,
    }


@pytest.mark.parametrize(
    "values",
    [
        {"health_check_interval_s": 10},
        {"health_check_interval_s": MAX_INTERVAL_S},
        {"health_check_script": "echo ok"},
        {"cleanup": CleanUp.DELETE_UNAVAILABLE, "cleanup_after_s": 60},
        {"connectivity": Connectivity.MAY_BE_OFFLINE},
    ],
    ids=["interval-10s", "interval-a-week", "script", "delete-after-60s", "may-be-offline"],
)
def test_create_policy_accepts_values_at_the_limits(app: Shoal, values: dict[str, Any]) -> None:
    fields = fields_of(app, create(app, **values))

    assert {k: fields[k] for k in values} == values


@pytest.mark.parametrize("values", BAD_VALUES, ids=BAD_IDS)
def test_create_policy_rejects_bad_values_and_writes_nothing(app: Shoal, values: dict[str, Any]) -> None:
    kwargs = {"name": "Fast", **values}

    with writes_nothing(app), pytest.raises(Rejected):
        app.create_policy(actor=ALICE, **kwargs)


@pytest.mark.parametrize("second", ["Fast", "FAST", " fast "])
def test_a_taken_policy_name_is_a_conflict_and_writes_nothing(app: Shoal, second: str) -> None:
    create(app, "Fast")

    with writes_nothing(app), pytest.raises(Conflict):
        create(app, second)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Slow"},
        {"description": "for build agents"},
        {"health_check_interval_s": 60},
        {"health_check_script": "echo fine"},
        {"connectivity": Connectivity.MAY_BE_OFFLINE},
        {"cleanup": CleanUp.DELETE_UNAVAILABLE, "cleanup_after_s": 3600},
    ],
    ids=["name", "description", "interval", "script", "connectivity", "cleanup"],
)
def test_update_policy_changes_only_the_given_fields(app: Shoal, change: dict[str, Any]) -> None:
    policy_id = create(app, description="old")
    expected = {**fields_of(app, policy_id), **change}

    app.update_policy(policy_id, actor=ALICE, **change)

    assert fields_of(app, policy_id) == expected


@pytest.mark.parametrize(
    "same",
    [
        {},
        {"name": "Fast"},
        {"health_check_interval_s": DEFAULT_INTERVAL_S, "description": "old"},
        {"cleanup": CleanUp.KEEP, "connectivity": Connectivity.EXPECTED_ONLINE},
    ],
    ids=["nothing", "same-name", "same-settings", "same-enums"],
)
def test_an_update_that_changes_nothing_writes_nothing(app: Shoal, same: dict[str, Any]) -> None:
    policy_id = create(app, description="old")

    with writes_nothing(app):
        app.update_policy(policy_id, actor=ALICE, **same)


def test_an_update_records_one_event_for_several_settings(app: Shoal) -> None:
    policy_id = create(app)
    before = head(app)

    app.update_policy(policy_id, description="x", health_check_interval_s=60, actor=ALICE)

    assert [type(e).__name__ for e in events_after(app, before)] == ["Updated"]


@pytest.mark.parametrize("values", BAD_VALUES, ids=BAD_IDS)
def test_update_policy_rejects_bad_values_and_changes_nothing(app: Shoal, values: dict[str, Any]) -> None:
    policy_id = create(app)
    before = fields_of(app, policy_id)

    with writes_nothing(app), pytest.raises(Rejected):
        app.update_policy(policy_id, actor=ALICE, **values)

    assert fields_of(app, policy_id) == before


def test_renaming_a_policy_frees_its_old_name(app: Shoal) -> None:
    policy_id = create(app, "Fast")

    app.update_policy(policy_id, name="Slow", actor=ALICE)

    assert (app.owner_of(POLICY, "fast"), app.owner_of(POLICY, "SLOW")) == (None, policy_id)


def test_renaming_a_policy_to_a_taken_name_is_a_conflict(app: Shoal) -> None:
    policy_id = create(app, "Fast")

    with writes_nothing(app), pytest.raises(Conflict):
        app.update_policy(policy_id, name="default machine policy", actor=ALICE)


@pytest.mark.parametrize("name_or_id", ["Fast", "fast"])
def test_resolve_policy_by_name(app: Shoal, name_or_id: str) -> None:
    policy_id = create(app, "Fast")

    assert app.resolve_policy(name_or_id).id == policy_id


@pytest.mark.parametrize(
    "call",
    [
        lambda app, i: app.get_policy(i),
        lambda app, i: app.update_policy(i, description="x", actor=ALICE),
        lambda app, i: app.resolve_policy(str(i)),
    ],
    ids=["get", "update", "resolve"],
)
def test_an_unknown_policy_id_is_not_found(app: Shoal, call: Callable[..., Any]) -> None:
    with writes_nothing(app), pytest.raises(NotFound):
        call(app, uuid4())


def test_a_pool_id_is_not_a_policy(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.get_policy(app.default_pool_id())
