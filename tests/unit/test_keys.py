"""API keys: shown once, stored only as a hash, checked on every request."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.errors import NotFound, Rejected
from domain.keys import Permission, grants, key_text, parse_key_text
from tests.unit.support import ALICE, head, notifications_after, writes_nothing

P = Permission


def new_key(app: Shoal, *permissions: Permission, name: str = "ci") -> tuple[UUID, str]:
    permissions = permissions or (P.WORKER_VIEW,)
    saved, text = app.create_key(name=name, permissions=permissions, actor=ALICE)
    return saved.aggregate.id, text


def secret_of(text: str) -> str:
    parsed = parse_key_text(text)
    assert parsed is not None
    return parsed[1]


def test_a_new_keys_text_authenticates_as_that_key(app: Shoal) -> None:
    key_id, text = new_key(app)

    key = app.authenticate(text)

    assert key is not None
    assert key.id == key_id


def test_a_key_keeps_its_permissions_once_each_in_order(app: Shoal) -> None:
    _, text = new_key(app, P.TASK_VIEW, P.WORKER_VIEW, P.TASK_VIEW)

    key = app.authenticate(text)

    assert key is not None
    assert key.permissions == (P.TASK_VIEW, P.WORKER_VIEW)


def test_two_keys_get_different_texts(app: Shoal) -> None:
    assert new_key(app, name="a")[1] != new_key(app, name="b")[1]


def test_the_secret_is_written_nowhere_in_the_event_log(app: Shoal) -> None:
    _, text = new_key(app)
    secret = secret_of(text).encode()

    states = [n.state for n in notifications_after(app, 0)]

    assert states, "expected stored events to scan"
    assert not [s for s in states if secret in s or text.encode() in s]


def test_the_install_secret_is_written_nowhere_in_the_event_log(fresh: Shoal) -> None:
    text = fresh.install()
    assert text is not None

    assert not [n for n in notifications_after(fresh, 0) if secret_of(text).encode() in n.state]


def test_the_key_holds_the_sha256_of_its_secret(app: Shoal) -> None:
    key_id, text = new_key(app)
    secret = secret_of(text)

    stored = app.aggregate_state(key_id).secret_hash

    assert stored == hashlib.sha256(secret.encode()).hexdigest() != secret


def test_a_keys_requests_are_recorded_as_that_key(app: Shoal) -> None:
    key_id, text = new_key(app, name="deployer")

    key = app.authenticate(text)

    assert key is not None
    assert key.actor == Actor(ActorKind.API_KEY, str(key_id), "deployer")


@pytest.mark.parametrize(
    ("held", "needed", "granted"),
    [
        ({P.ADMINISTER}, P.CONFIGURE_SERVER, True),
        ({P.ADMINISTER}, P.TASK_CREATE, True),
        ({P.ADMINISTER}, P.ADMINISTER, True),
        ({P.WORKER_VIEW}, P.WORKER_VIEW, True),
        ({P.WORKER_VIEW, P.TASK_CREATE}, P.TASK_CREATE, True),
        ({P.WORKER_VIEW}, P.CONFIGURE_SERVER, False),
        ({P.CONFIGURE_SERVER}, P.ADMINISTER, False),
        ({P.PROJECT_EDIT}, P.PROJECT_VIEW, False),
        (set(), P.WORKER_VIEW, False),
    ],
)
def test_grants(held: set[Permission], needed: Permission, granted: bool) -> None:
    assert grants(frozenset(held), needed) is granted


@pytest.mark.parametrize("needed", list(Permission))
def test_administer_implies_every_permission(needed: Permission) -> None:
    assert grants(frozenset({P.ADMINISTER}), needed) is True


@pytest.mark.parametrize(
    ("name", "permissions"),
    [("ci", ()), ("", (P.WORKER_VIEW,)), ("   ", (P.WORKER_VIEW,)), ("x" * 201, (P.TASK_VIEW,))],
    ids=["no-permissions", "empty-name", "blank-name", "long-name"],
)
def test_create_key_rejects_bad_input_and_writes_nothing(
    app: Shoal, name: str, permissions: tuple[Permission, ...]
) -> None:
    with writes_nothing(app), pytest.raises(Rejected):
        app.create_key(name=name, permissions=permissions, actor=ALICE)


def test_create_key_returns_the_position_of_its_event(app: Shoal) -> None:
    saved, _ = app.create_key(name="ci", permissions=(P.TASK_VIEW,), actor=ALICE)

    assert saved.position == head(app)


MALFORMED = {
    "empty": lambda h, s: "",
    "prefix-only": lambda h, s: "shoal",
    "no-secret": lambda h, s: f"shoal_{h}",
    "empty-secret": lambda h, s: f"shoal_{h}_",
    "wrong-prefix": lambda h, s: f"octo_{h}_{s}",
    "short-id": lambda h, s: f"shoal_{h[:-1]}_{s}",
    "non-hex-id": lambda h, s: f"shoal_{'z' * 32}_{s}",
    "no-prefix": lambda h, s: f"{h}_{s}",
    "secret-only": lambda h, s: s,
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_key_does_not_authenticate(app: Shoal, make: Callable[..., Any]) -> None:
    key_id, text = new_key(app)

    assert app.authenticate(make(key_id.hex, secret_of(text))) is None


def test_a_wrong_secret_does_not_authenticate(app: Shoal) -> None:
    key_id, text = new_key(app)

    assert app.authenticate(key_text(key_id, secret_of(text) + "x")) is None


def test_another_keys_secret_does_not_authenticate(app: Shoal) -> None:
    key_id, _ = new_key(app, name="a")
    _, other = new_key(app, name="b")

    assert app.authenticate(key_text(key_id, secret_of(other))) is None


def test_an_unknown_key_id_does_not_authenticate(app: Shoal) -> None:
    _, text = new_key(app)

    assert app.authenticate(key_text(uuid4(), secret_of(text))) is None


def test_a_pool_id_does_not_authenticate_as_a_key(app: Shoal) -> None:
    assert app.authenticate(key_text(app.default_pool_id(), "anything")) is None


def test_surrounding_whitespace_is_ignored(app: Shoal) -> None:
    key_id, text = new_key(app)

    key = app.authenticate(f"  {text}\n")

    assert key is not None
    assert key.id == key_id


def test_a_revoked_key_does_not_authenticate(app: Shoal) -> None:
    key_id, text = new_key(app)

    app.revoke_key(key_id, actor=ALICE)

    assert app.authenticate(text) is None


def test_revoking_a_key_leaves_other_keys_working(app: Shoal) -> None:
    key_id, _ = new_key(app, name="a")
    _, other = new_key(app, name="b")

    app.revoke_key(key_id, actor=ALICE)

    assert app.authenticate(other) is not None


def test_revoking_twice_writes_one_event(app: Shoal) -> None:
    key_id, _ = new_key(app)
    app.revoke_key(key_id, actor=ALICE)

    with writes_nothing(app):
        app.revoke_key(key_id, actor=ALICE)


def test_revoking_an_unknown_key_is_not_found(app: Shoal) -> None:
    with pytest.raises(NotFound):
        app.revoke_key(uuid4(), actor=ALICE)
