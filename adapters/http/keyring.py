"""The API keys this node has verified, held in memory: checking the key of every request
then costs a hash and a dict look-up on the event loop, not a thread hop and a store read.

A key's entry is dropped the moment this node saves any event of that key (revoked,
changed), so a revocation takes effect on the very next request. Several nodes sharing
PostgreSQL do not see each other's saves: there an entry is trusted for ``max_age_s``
only (the server sets a couple of seconds) and then checked against the store again.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.actors import Actor
from domain.app import Shoal
from domain.keys import ApiKey, Permission, hash_secret, parse_key_text


@dataclass(frozen=True)
class KnownKey:
    """What a request needs of a live key. The hash stays (never the secret), so each
    request's presented secret is still checked, in constant time."""

    secret_hash: str
    permissions: frozenset[Permission]
    actor: Actor
    checked_at: float


class KeyRing:
    """Verified keys by id; fills itself from the store on a miss."""

    def __init__(self, app: Shoal, max_age_s: float | None) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self._keys: dict[UUID, KnownKey] = {}
        # Saves happen in other threads: a look-up in flight must not put back an entry
        # that a save dropped meanwhile (a revocation would then be missed).
        self._lock = threading.Lock()
        self._generation = 0

    def forget(self, recorded: Iterable[tuple[int, Any]]) -> None:
        """Drop the keys these saved events belong to (Application.on_recorded)."""
        changed = [e.originator_id for _, e in recorded if isinstance(e, ApiKey.Event)]
        if changed:
            with self._lock:
                self._generation += 1
                for key_id in changed:
                    self._keys.pop(key_id, None)

    async def authenticate(self, presented: str) -> KnownKey | None:
        """The live key ``presented`` is, or None (malformed, unknown, wrong, revoked)."""
        parsed = parse_key_text(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        known = self._keys.get(key_id)
        if known is not None and (self.max_age_s is None or now - known.checked_at < self.max_age_s):
            return known if hmac.compare_digest(known.secret_hash, hash_secret(secret)) else None
        with self._lock:
            generation = self._generation
        key = await asyncio.to_thread(self.app.authenticate, presented)
        if key is None:
            with self._lock:
                self._keys.pop(key_id, None)
            return None
        known = KnownKey(key.secret_hash, frozenset(key.permissions), key.actor, now)
        with self._lock:
            if self._generation == generation:
                self._keys[key_id] = known
        return known
