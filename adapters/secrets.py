"""Secrets at rest: text the server seals with a key only it holds (Fernet: AES-128-CBC
plus HMAC-SHA256), e.g. SSH workers' private keys before they go into an event."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretError(Exception):
    """A sealed value cannot be opened (another server's key, or damaged)."""


class SecretBox:
    """Seals and opens text with the server's secrets key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The box whose key is in ``path``, made (mode 0600) on first use. Nodes that
        share a database must share this file too, or they cannot open each other's
        sealed values."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use theirs
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(Fernet.generate_key() + b"\n")
        return cls(path.read_bytes().strip())

    def seal(self, text: str) -> str:
        """``text`` encrypted and authenticated, as URL-safe base64 text."""
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, token: str) -> str:
        """The text sealed in ``token``; SecretError when it was not sealed with this key
        or was changed."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise SecretError("a sealed secret cannot be opened with this server's secrets key") from None
