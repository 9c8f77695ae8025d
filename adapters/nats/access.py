"""Who may use the embedded nats-server: the server itself, and one user per agent.

``accounts.conf`` (included by the embedded server's nats.conf) is rendered here, from the
agent-credentials read model, whenever an agent is registered or removed, and applied
with a reload: a removed agent's connection is closed by nats-server at once and its
reconnects fail, which is how a deregistered agent learns to stop.

Passwords are stored only as bcrypt hashes (nats-server checks bcrypt itself); the server
gets a fresh random password at every start, so the file never holds a usable secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import bcrypt

from adapters.nats import subjects
from adapters.nats.embedded import EmbeddedNats

log = logging.getLogger("shoal.nats")

# nats-server pays this per connection attempt; 10 is ~50 ms, plenty for random secrets.
BCRYPT_ROUNDS = 10


def new_secret() -> tuple[str, str]:
    """A fresh agent password and its bcrypt hash."""
    password = secrets.token_urlsafe(32)
    return password, hash_secret(password)


def hash_secret(password: str) -> str:
    """bcrypt, in the ``$2a$`` form nats-server accepts."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    return "$2a$" + hashed[4:] if hashed.startswith("$2b$") else hashed


def render_accounts(server_hash: str, agents: Mapping[str, str]) -> str:
    """The ``authorization`` block: the server with every right, each agent with only
    its own subjects (``subjects.agent_permissions``)."""
    q = json.dumps  # JSON quoting is valid NATS config quoting, and keeps "$2a$..." literal
    users = [f"    {{user: {q(subjects.SERVER_USER)}, password: {q(server_hash)}}}"]
    for worker_id, secret_hash in sorted(agents.items()):
        users.append(
            f"    {{user: {q(subjects.agent_user(worker_id))}, password: {q(secret_hash)}, "
            f"permissions: {json.dumps(subjects.agent_permissions(worker_id))}}}"
        )
    return (
        "# Written by Shoal from its event log: edits here are lost.\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )


class AgentAccess:
    """Keeps the embedded nats-server's users in step with the registered agents."""

    def __init__(self, nats: EmbeddedNats) -> None:
        self.nats = nats
        self.server_password = secrets.token_urlsafe(32)
        self._server_hash = hash_secret(self.server_password)
        self._lock = asyncio.Lock()
        self._written: str | None = None

    def write(self, agents: Mapping[str, str]) -> bool:
        """Write accounts.conf for these agents (worker id -> hash); True if it changed."""
        text = render_accounts(self._server_hash, agents)
        if text == self._written:
            return False
        folder = self.nats.accounts_file.parent
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _write_private(self.nats.accounts_file, text)
        self._written = text
        return True

    async def apply(self, agents: Mapping[str, str]) -> None:
        """Write and, when it changed and the server runs, reload; returns once
        nats-server has applied it (so a just-registered agent can connect)."""
        async with self._lock:
            # A file write: off the event loop, like every other blocking call.
            if await asyncio.to_thread(self.write, agents) and self.nats.pid is not None:
                await self.nats.reload()
                log.info("agent users applied", extra={"agents": len(agents)})


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
