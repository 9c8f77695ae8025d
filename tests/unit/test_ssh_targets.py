"""The dispatcher's view of an SSH worker: its settings with the private key opened (or
read from the file it names), and clear errors when the key cannot be had."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID, uuid4

import asyncssh
import pytest

from adapters.secrets import SecretBox
from adapters.ssh.targets import SshTargetError, seal_private_key, ssh_target_of
from domain.app import Shoal
from domain.errors import NotFound, Rejected
from domain.ssh import SshSettings
from domain.workers import CommsStyle
from tests.unit.support import ALICE

FP = "SHA256:" + "Z" * 42 + "A"


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "secrets-key")


@pytest.fixture
def key() -> str:
    return str(asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())


def register(app: Shoal, sealed: str | None = None, ref: str | None = None) -> UUID:
    ssh = SshSettings("10.1.2.3", 2022, "deploy", FP, private_key_sealed=sealed, private_key_ref=ref)
    return app.register_worker(
        name=f"ssh-{uuid4().hex[:6]}", pool_ids=(app.default_pool_id(),),
        comms_style=CommsStyle.SSH, ssh=ssh, actor=ALICE,
    ).aggregate.id


def test_the_key_file_is_made_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets-key"
    token = SecretBox.from_file(path).seal("text")

    assert os.stat(path).st_mode & 0o777 == 0o600
    assert SecretBox.from_file(path).open(token) == "text"
    assert "text" not in token


def test_a_sealed_key_is_opened_for_the_dispatcher(app: Shoal, box: SecretBox, key: str) -> None:
    worker_id = register(app, sealed=seal_private_key(box, key))

    spec = ssh_target_of(app, box, worker_id)

    assert (spec.worker_id, spec.host, spec.port, spec.username, spec.host_key_fingerprint) == (
        worker_id, "10.1.2.3", 2022, "deploy", FP,
    )
    assert spec.private_key == key
    assert key not in repr(spec) and "private_key" not in repr(spec)


def test_a_key_ref_is_read_when_asked(app: Shoal, box: SecretBox, key: str, tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    path.write_text(key)

    assert ssh_target_of(app, box, register(app, ref=str(path))).private_key == key


def test_a_missing_or_bad_key_ref_is_a_clear_error(app: Shoal, box: SecretBox, tmp_path: Path) -> None:
    missing = register(app, ref=str(tmp_path / "gone"))
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")

    with pytest.raises(SshTargetError, match="cannot read private_key_ref"):
        ssh_target_of(app, box, missing)
    with pytest.raises(SshTargetError, match="not a private key"):
        ssh_target_of(app, box, register(app, ref=str(garbage)))


def test_a_key_sealed_by_another_server_cannot_be_opened(
    app: Shoal, box: SecretBox, key: str, tmp_path: Path
) -> None:
    other = SecretBox.from_file(tmp_path / "other-key")
    worker_id = register(app, sealed=seal_private_key(other, key))

    with pytest.raises(SshTargetError, match="cannot be opened") as caught:
        ssh_target_of(app, box, worker_id)
    assert key not in str(caught.value)


def test_only_ssh_workers_are_ssh_targets(app: Shoal, box: SecretBox) -> None:
    agent = app.register_worker(
        name="agent", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.POLLING, actor=ALICE
    ).aggregate.id

    with pytest.raises(SshTargetError, match="not an SSH worker"):
        ssh_target_of(app, box, agent)
    with pytest.raises(NotFound):
        ssh_target_of(app, box, uuid4())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hunter2", "not a private key"),
        ("x" * 70_000, "larger than"),
    ],
)
def test_sealing_refuses_what_is_no_private_key_without_quoting_it(
    box: SecretBox, text: str, message: str
) -> None:
    with pytest.raises(Rejected, match=message) as caught:
        seal_private_key(box, text)
    assert text not in str(caught.value)


def test_sealing_refuses_a_public_key(box: SecretBox, key: str) -> None:
    public = asyncssh.import_private_key(key).export_public_key().decode()

    with pytest.raises(Rejected, match="not a private key"):
        seal_private_key(box, public)


def test_sealed_settings_survive_a_settings_change(app: Shoal, box: SecretBox, key: str) -> None:
    worker_id = register(app, sealed=seal_private_key(box, key))

    app.update_worker(worker_id, ssh={"host": "10.9.9.9"}, actor=ALICE)

    spec = ssh_target_of(app, box, worker_id)
    assert (spec.host, spec.private_key) == ("10.9.9.9", key)
