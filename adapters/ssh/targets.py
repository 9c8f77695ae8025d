"""An SSH worker's private key on its way in (checked, sealed) and out (opened for the
dispatcher). The key text exists in clear only in memory, never in an event, read model,
log line or API answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import asyncssh

from adapters.secrets import SecretBox, SecretError
from domain.app import Shoal
from domain.errors import Rejected
from domain.workers import CommsStyle

MAX_KEY_BYTES = 64 * 1024


class SshTargetError(Exception):
    """An SSH worker cannot be reached as configured (its key cannot be had)."""


@dataclass(frozen=True)
class SshTargetSpec:
    """Everything needed to open an SSH connection to one worker."""

    worker_id: UUID
    host: str
    port: int
    username: str
    host_key_fingerprint: str
    private_key: str = field(repr=False)


def _parses(text: str) -> str | None:
    """None when ``text`` is a private key asyncssh can use, else why not (never quoting
    the text)."""
    if len(text.encode()) > MAX_KEY_BYTES:
        return f"is larger than {MAX_KEY_BYTES} bytes"
    try:
        asyncssh.import_private_key(text)
    except asyncssh.KeyImportError as exc:
        if "assphrase" in str(exc):
            return "is encrypted with a passphrase; give an unencrypted key"
        return "is not a private key in PEM or OpenSSH format"
    except (ValueError, TypeError):
        return "is not a private key in PEM or OpenSSH format"
    return None


def seal_private_key(secrets: SecretBox, text: str) -> str:
    """The key sealed for an event; Rejected (422) when it is no usable private key."""
    problem = _parses(text)
    if problem is not None:
        raise Rejected(f"ssh private_key {problem}")
    return secrets.seal(text)


def _read_ref(path_text: str) -> str:
    path = Path(path_text)
    if not path.is_absolute():
        raise SshTargetError(f"private_key_ref {path_text!r} is not an absolute path")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise SshTargetError(f"cannot read private_key_ref {path_text!r}: {reason}") from None
    problem = _parses(text)
    if problem is not None:
        raise SshTargetError(f"private_key_ref {path_text!r} {problem}")
    return text


def ssh_target_of(app: Shoal, secrets: SecretBox, worker_id: UUID) -> SshTargetSpec:
    """How to reach SSH worker ``worker_id``: its settings with its private key in clear
    (opened from the sealed copy, or read from the ``private_key_ref`` file). NotFound for
    an unknown worker; SshTargetError when it is not an SSH worker or its key cannot be
    had. Blocking (store read, maybe a file read): call it in a thread from async code."""
    worker = app.get_worker(worker_id)
    ssh = worker.ssh
    if worker.comms_style is not CommsStyle.SSH:
        raise SshTargetError(f"worker {worker.name!r} is not an SSH worker")
    if ssh is None:
        raise SshTargetError(
            f"SSH worker {worker.name!r} has no ssh settings (registered before they were "
            "required); give them with PATCH /api/workers/<id> {\"ssh\": {...}}"
        )
    if ssh.private_key_sealed is not None:
        try:
            key = secrets.open(ssh.private_key_sealed)
        except SecretError as exc:
            raise SshTargetError(f"worker {worker.name!r}: {exc}") from None
    elif ssh.private_key_ref is not None:
        key = _read_ref(ssh.private_key_ref)
    else:  # pragma: no cover  (the domain keeps exactly one of the two)
        raise SshTargetError(f"worker {worker.name!r} has no private key")
    return SshTargetSpec(
        worker_id=worker.id, host=ssh.host, port=ssh.port, username=ssh.username,
        host_key_fingerprint=ssh.host_key_fingerprint, private_key=key,
    )
