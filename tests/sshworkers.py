"""SSH settings for tests that register an SSH worker but do not connect to it: an SSH
worker cannot be registered without them."""

from __future__ import annotations

from typing import Any

from domain.ssh import SshSettings
from domain.workers import CommsStyle

FINGERPRINT = "SHA256:" + "x" * 42 + "Q"
KEY_REF = "/etc/shoal/ssh/id_ed25519"

SSH = SshSettings(
    host="ssh-worker.invalid", port=22, username="deploy", host_key_fingerprint=FINGERPRINT,
    private_key_ref=KEY_REF,
)

# The same, as the HTTP API takes it (POST /api/workers {"ssh": ...}).
SSH_JSON: dict[str, Any] = {
    "host": SSH.host, "username": SSH.username, "host_key_fingerprint": FINGERPRINT,
    "private_key_ref": KEY_REF,
}


def ssh_for(style: CommsStyle | str) -> SshSettings | None:
    """The settings a worker of ``style`` needs: SSH's for an SSH worker, else none."""
    return SSH if CommsStyle(style) is CommsStyle.SSH else None


def ssh_json_for(style: str) -> dict[str, Any]:
    """Extra body fields for POST /api/workers: ``{"ssh": ...}`` for an SSH worker."""
    return {"ssh": SSH_JSON} if style == "ssh" else {}
