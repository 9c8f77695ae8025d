"""SSH workers: their settings are checked, recorded with the registration, changed later,
and the private key never sits in an event in clear (the adapter seals it first)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any
from uuid import UUID

import pytest

from domain.app import Shoal
from domain.codec import OrjsonTranscoder
from domain.errors import Rejected
from domain.ssh import SshSettings, changed_ssh, check_ssh_settings
from domain.workers import CommsStyle, Worker
from projections.audit import REDACTED, event_data
from tests.unit.support import ALICE, events_after, head, replay, writes_nothing

FP = "SHA256:" + "A" * 42 + "0"
SEALED = "gAAAA-sealed-by-the-adapter"


def settings(**changes: Any) -> SshSettings:
    base = SshSettings("web-01.example.com", 22, "deploy", FP, private_key_sealed=SEALED)
    return replace(base, **changes)


def register_ssh(app: Shoal, ssh: SshSettings | None = None, name: str = "ssh-1") -> UUID:
    return app.register_worker(
        name=name, pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.SSH,
        ssh=ssh or settings(), actor=ALICE,
    ).aggregate.id


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": ""}, "host must not be empty"),
        ({"host": "web 01"}, "spaces"),
        ({"host": "h" * 254}, "at most 253"),
        ({"username": ""}, "username must not be empty"),
        ({"username": "de\nploy"}, "spaces or control"),
        ({"port": 0}, "between 1 and 65535"),
        ({"port": 65536}, "between 1 and 65535"),
        ({"host_key_fingerprint": "MD5:aa:bb"}, "SHA256:"),
        ({"host_key_fingerprint": "SHA256:" + "A" * 42}, "SHA256:"),
        ({"host_key_fingerprint": "SHA256:" + "A" * 42 + "!"}, "SHA256:"),
        ({"private_key_ref": "/etc/shoal/key"}, "exactly one"),
        ({"private_key_sealed": None}, "exactly one"),
        ({"private_key_sealed": None, "private_key_ref": "keys/id"}, "absolute path"),
    ],
)
def test_bad_ssh_settings_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(Rejected, match=message):
        check_ssh_settings(settings(**changes))


def test_good_ssh_settings_pass_and_padding_is_dropped_from_the_fingerprint() -> None:
    checked = check_ssh_settings(settings(host_key_fingerprint=FP + "=", port=2222))

    assert (checked.host_key_fingerprint, checked.port) == (FP, 2222)
    assert check_ssh_settings(settings(private_key_sealed=None, private_key_ref="/k")).private_key_ref


def test_the_sealed_key_is_not_in_the_settings_repr() -> None:
    assert SEALED not in repr(settings())


def test_registering_an_ssh_worker_records_its_settings_in_the_same_save(app: Shoal) -> None:
    before = head(app)
    worker_id = register_ssh(app)

    types = [type(e) for e in events_after(app, before) if e.originator_id == worker_id]
    assert types == [Worker.Registered, Worker.SshConfigured]
    assert replay(app, worker_id).ssh == settings()
    assert app.get_worker(worker_id).ssh == settings()


def test_an_ssh_worker_needs_ssh_settings(app: Shoal) -> None:
    with writes_nothing(app), pytest.raises(Rejected, match="needs ssh settings"):
        app.register_worker(
            name="x", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.SSH, actor=ALICE
        )


@pytest.mark.parametrize("style", [CommsStyle.POLLING, CommsStyle.LISTENING])
def test_an_agent_worker_must_not_have_ssh_settings(app: Shoal, style: CommsStyle) -> None:
    with writes_nothing(app), pytest.raises(Rejected, match="only for an ssh worker"):
        app.register_worker(
            name="x", pool_ids=(app.default_pool_id(),), comms_style=style, ssh=settings(),
            actor=ALICE,
        )


def test_bad_settings_register_nothing(app: Shoal) -> None:
    with writes_nothing(app), pytest.raises(Rejected):
        register_ssh(app, settings(port=0))


def test_an_agent_worker_has_no_ssh_settings_and_cannot_get_them(app: Shoal) -> None:
    worker_id = app.register_worker(
        name="agent", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.POLLING,
        actor=ALICE,
    ).aggregate.id

    assert app.get_worker(worker_id).ssh is None
    with writes_nothing(app), pytest.raises(Rejected, match="only for an ssh worker"):
        app.update_worker(worker_id, ssh={"host": "h"}, actor=ALICE)


def test_update_changes_only_the_named_ssh_settings(app: Shoal) -> None:
    worker_id = register_ssh(app)

    app.update_worker(worker_id, ssh={"host": "web-02", "port": 2200}, actor=ALICE)

    assert replay(app, worker_id).ssh == settings(host="web-02", port=2200)


def test_a_new_key_ref_replaces_the_sealed_key_and_back(app: Shoal) -> None:
    worker_id = register_ssh(app)

    app.update_worker(worker_id, ssh={"private_key_ref": "/srv/keys/id"}, actor=ALICE)
    assert app.get_worker(worker_id).ssh == settings(private_key_sealed=None, private_key_ref="/srv/keys/id")

    app.update_worker(worker_id, ssh={"private_key_sealed": "gAAAA-new"}, actor=ALICE)
    assert app.get_worker(worker_id).ssh == settings(private_key_sealed="gAAAA-new")


def test_unchanged_ssh_settings_record_nothing(app: Shoal) -> None:
    worker_id = register_ssh(app)

    with writes_nothing(app):
        app.update_worker(worker_id, ssh={"host": settings().host}, actor=ALICE)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"private_key_sealed": "a", "private_key_ref": "/b"}, "exactly one"),
        ({"password": "x"}, "unknown ssh settings: password"),
        ({"port": 70000}, "between 1 and 65535"),
    ],
)
def test_bad_ssh_changes_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(Rejected, match=message):
        changed_ssh(settings(), changes)


def test_the_sealed_key_is_redacted_in_the_audit_data(app: Shoal) -> None:
    before = head(app)
    register_ssh(app)

    configured = next(e for e in events_after(app, before) if isinstance(e, Worker.SshConfigured))
    data = event_data(configured)
    assert data["private_key_sealed"] == REDACTED
    assert (data["host"], data["username"], data["private_key_ref"]) == (
        "web-01.example.com", "deploy", None,
    )


def test_no_event_field_is_meant_to_hold_a_key_in_clear() -> None:
    # The aggregate takes only a sealed key or a path: a field named like a clear key
    # would be a leak waiting to happen.
    names = set(Worker.SshConfigured.__annotations__) | {f.name for f in fields(SshSettings)}
    assert "private_key" not in names
    assert {"private_key_sealed", "private_key_ref"} <= names


def test_stored_events_hold_only_what_the_adapter_sealed(app: Shoal) -> None:
    # Whatever the adapter hands over is stored as is; the adapter hands over a sealed
    # key, so the clear text given at the HTTP edge never reaches the store.
    before = head(app)
    register_ssh(app)
    app.update_worker(app.owner_of("worker", "ssh-1") or UUID(int=0), ssh={"port": 23}, actor=ALICE)

    stored = b"".join(
        n.state for n in app.recorder.select_notifications(start=before + 1, limit=100)
    )
    assert SEALED.encode() in stored
    assert b"BEGIN OPENSSH" not in stored
    assert OrjsonTranscoder().decode(OrjsonTranscoder().encode(settings())) == settings()


def test_an_ssh_worker_without_settings_gets_them_only_in_full(app: Shoal) -> None:
    # SSH workers registered before settings were required have none (replayed as is).
    worker_id = register_ssh(app)
    worker = app.get_worker(worker_id)
    worker.ssh = None
    app.repository.cache.put(worker_id, worker)  # type: ignore[union-attr]

    with writes_nothing(app), pytest.raises(Rejected, match="give port, username"):
        app.update_worker(worker_id, ssh={"host": "h"}, actor=ALICE)
    full = {"host": "h", "port": 22, "username": "u", "host_key_fingerprint": FP,
            "private_key_ref": "/k"}
    app.update_worker(worker_id, ssh=full, actor=ALICE)
    assert app.get_worker(worker_id).ssh == SshSettings("h", 22, "u", FP, private_key_ref="/k")
