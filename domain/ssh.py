"""How the server reaches an SSH worker: host, account, pinned host key, and its private key.

The private key is never held here in clear: either ``private_key_sealed`` (encrypted by the
server with a key only the server holds; the adapter seals and opens it) or
``private_key_ref`` (an absolute path of a key file on the server). Pure rules, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from domain.codec import register_record
from domain.errors import Rejected

DEFAULT_SSH_PORT = 22
MAX_HOST_LENGTH = 253
MAX_USERNAME_LENGTH = 255
MAX_REF_LENGTH = 4096
# A SHA-256 digest is 32 bytes: 43 base64 characters without padding (OpenSSH's form).
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
KEY_FIELDS = ("private_key_sealed", "private_key_ref")


@register_record
@dataclass(frozen=True)
class SshSettings:
    """An SSH worker's connection settings; exactly one of the two key fields is set."""

    host: str
    port: int
    username: str
    host_key_fingerprint: str
    private_key_sealed: str | None = field(default=None, repr=False)
    private_key_ref: str | None = None


def _plain(value: str, what: str, limit: int) -> str:
    if not value:
        raise Rejected(f"ssh {what} must not be empty")
    if len(value) > limit:
        raise Rejected(f"ssh {what} must be at most {limit} characters")
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
        raise Rejected(f"ssh {what} must not contain spaces or control characters")
    return value


def check_fingerprint(value: str) -> str:
    """``SHA256:`` and 43 base64 characters (a trailing ``=`` of padding is dropped)."""
    text = value.strip()
    if text.endswith("="):
        text = text[:-1]
    if not FINGERPRINT.fullmatch(text):
        raise Rejected(
            "ssh host_key_fingerprint must look like SHA256:<43 base64 characters> "
            "(as `ssh-keygen -lf <host key>.pub` prints it)"
        )
    return text


def check_ssh_settings(settings: SshSettings) -> SshSettings:
    """The settings as they will be stored (fingerprint normalised), or Rejected."""
    _plain(settings.host, "host", MAX_HOST_LENGTH)
    _plain(settings.username, "username", MAX_USERNAME_LENGTH)
    if isinstance(settings.port, bool) or not 1 <= settings.port <= 65535:
        raise Rejected(f"ssh port must be between 1 and 65535, got {settings.port}")
    fingerprint = check_fingerprint(settings.host_key_fingerprint)
    sealed, ref = settings.private_key_sealed, settings.private_key_ref
    if (sealed is None) == (ref is None):
        raise Rejected("ssh needs exactly one of private_key and private_key_ref")
    if sealed is not None and not sealed:
        raise Rejected("ssh private_key must not be empty")
    if ref is not None:
        if not ref.startswith("/"):
            raise Rejected("ssh private_key_ref must be an absolute path on the server")
        if len(ref) > MAX_REF_LENGTH or any(unicodedata.category(ch).startswith("C") for ch in ref):
            raise Rejected("ssh private_key_ref is not a usable path")
    return replace(settings, host_key_fingerprint=fingerprint)


def changed_ssh(base: SshSettings | None, changes: Mapping[str, Any]) -> SshSettings:
    """``base`` with ``changes`` applied (field name -> new value). Giving one of the key
    fields replaces the key: the other one is cleared. Without a ``base`` (an SSH worker
    registered before settings were required) every setting must be given."""
    known = {f.name for f in fields(SshSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise Rejected(f"unknown ssh settings: {', '.join(unknown)}")
    if base is None:
        missing = [k for k in ("host", "port", "username", "host_key_fingerprint") if changes.get(k) is None]
        if missing:
            raise Rejected(f"this worker has no ssh settings yet: give {', '.join(missing)} too")
        base = SshSettings(changes["host"], changes["port"], changes["username"],
                           changes["host_key_fingerprint"])
    values = dict(changes)
    given = [k for k in KEY_FIELDS if values.get(k) is not None]
    if len(given) > 1:
        raise Rejected("ssh needs exactly one of private_key and private_key_ref")
    if given:
        for other in KEY_FIELDS:
            values.setdefault(other, None)
    else:
        for key in KEY_FIELDS:
            values.pop(key, None)
    return check_ssh_settings(replace(base, **values))
