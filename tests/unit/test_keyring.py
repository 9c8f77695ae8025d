"""The HTTP layer's memory of verified API keys: fast, but never wrong about a revocation
this node made, and re-checked after a while when other nodes could have made one."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from adapters.http.keyring import KeyRing
from domain.app import Shoal
from domain.keys import Permission, key_text, parse_key_text
from tests.unit.support import ALICE


def new_key(app: Shoal) -> tuple[UUID, str]:
    saved, text = app.create_key(name="ci", permissions=(Permission.TASK_VIEW,), actor=ALICE)
    return saved.aggregate.id, text


def counted(app: Shoal, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every time the keyring asks the store."""
    calls: list[str] = []
    original = app.authenticate

    def spy(presented: str) -> Any:
        calls.append(presented)
        return original(presented)

    monkeypatch.setattr(app, "authenticate", spy)
    return calls


def ring(app: Shoal, max_age_s: float | None = None) -> KeyRing:
    keyring = KeyRing(app, max_age_s)
    app.on_recorded(keyring.forget)
    return keyring


def test_a_verified_key_is_answered_from_memory(app: Shoal, monkeypatch: pytest.MonkeyPatch) -> None:
    _, text = new_key(app)
    keyring = ring(app)
    calls = counted(app, monkeypatch)

    first = asyncio.run(keyring.authenticate(text))
    second = asyncio.run(keyring.authenticate(text))

    assert first is not None and second is not None
    assert second.permissions == frozenset({Permission.TASK_VIEW})
    assert second.actor == first.actor
    assert len(calls) == 1


def test_a_wrong_secret_for_a_known_key_is_refused(app: Shoal) -> None:
    key_id, text = new_key(app)
    keyring = ring(app)
    assert asyncio.run(keyring.authenticate(text)) is not None
    parsed = parse_key_text(text)
    assert parsed is not None

    assert asyncio.run(keyring.authenticate(key_text(key_id, parsed[1] + "x"))) is None


def test_a_revocation_saved_here_counts_at_the_next_request(app: Shoal) -> None:
    key_id, text = new_key(app)
    keyring = ring(app)
    assert asyncio.run(keyring.authenticate(text)) is not None

    app.revoke_key(key_id, actor=ALICE)

    assert asyncio.run(keyring.authenticate(text)) is None


def test_with_a_maximum_age_a_key_is_checked_against_the_store_again(app: Shoal) -> None:
    key_id, text = new_key(app)
    # Not subscribed to this app's saves: stands for a node that cannot hear another's.
    trusting, rechecking = KeyRing(app, None), KeyRing(app, 0.0)
    for keyring in (trusting, rechecking):
        assert asyncio.run(keyring.authenticate(text)) is not None

    app.revoke_key(key_id, actor=ALICE)

    assert asyncio.run(trusting.authenticate(text)) is not None
    assert asyncio.run(rechecking.authenticate(text)) is None


def test_a_revocation_during_a_look_up_is_not_undone_by_it(
    app: Shoal, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, text = new_key(app)
    keyring = ring(app)
    original = app.authenticate

    def revoked_meanwhile(presented: str) -> Any:
        key = original(presented)  # still live when read ...
        app.revoke_key(key_id, actor=ALICE)  # ... and revoked before the answer is kept
        return key

    monkeypatch.setattr(app, "authenticate", revoked_meanwhile)
    assert asyncio.run(keyring.authenticate(text)) is not None  # the request in flight
    monkeypatch.setattr(app, "authenticate", original)

    assert asyncio.run(keyring.authenticate(text)) is None


def test_malformed_and_unknown_keys_are_refused_and_not_kept(app: Shoal) -> None:
    keyring = ring(app)
    other_id, other = new_key(app)
    app.revoke_key(other_id, actor=ALICE)

    assert asyncio.run(keyring.authenticate("not a key")) is None
    assert asyncio.run(keyring.authenticate(other)) is None
    assert keyring._keys == {}
