"""Commands on API keys, and checking a presented key."""

from __future__ import annotations

from uuid import UUID

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.keys import (
    ApiKey,
    Permission,
    check_key_request,
    hash_secret,
    key_text,
    new_secret,
    parse_key_text,
)


class KeyCommands(CommandsBase):
    """Issue, revoke and check API keys."""

    def _new_key(
        self, name: str, permissions: tuple[Permission, ...], actor: Actor
    ) -> tuple[ApiKey, str]:
        name, permissions = check_key_request(name, permissions)
        secret = new_secret()
        key = ApiKey(
            name=name, secret_hash=hash_secret(secret), permissions=permissions, actor=actor
        )
        return key, key_text(key.id, secret)

    @command
    def create_key(
        self, *, name: str, permissions: tuple[Permission, ...], actor: Actor
    ) -> tuple[Saved[ApiKey], str]:
        """A new key; the text is returned here once and never stored."""
        key, text = self._new_key(name, permissions, actor)
        return Saved(key, self._save(key)), text

    @command
    def revoke_key(self, key_id: UUID, *, actor: Actor) -> int:
        """Make a key stop working."""
        key = self._get(ApiKey, key_id, "API key")
        key.revoke(actor)
        return self._save(key)

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key matching ``presented``, or None (malformed, unknown, revoked)."""
        parsed = parse_key_text(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        key = self._find(ApiKey, key_id)
        if key is None or not key.matches(secret):
            return None
        return key
