"""SSH connections to workers: one per worker, pinned to its host key, reused across steps.

:class:`SshConnections` owns every asyncssh connection Shoal opens to an SSH worker. A step
asks it for the worker's connection and opens channels on it (several at once); a dropped
connection is noticed (keep-alives find a dead peer within ``interval * (count_max + 1)``
seconds, 15 s by default) and replaced on the next use. The server's host key must have the
SHA-256 fingerprint the worker was registered with, or nothing is sent after the key
exchange (not even the user name's authentication).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field

import asyncssh

__all__ = ["HostKeyMismatch", "SshConnections", "SshError", "SshTarget", "SshUnavailable"]

log = logging.getLogger("shoal.ssh")


@dataclass(frozen=True)
class SshTarget:
    """Where an SSH worker is and how to log in. ``private_key`` (OpenSSH or PEM text) is
    never logged and never shown by ``repr``."""

    host: str
    port: int
    username: str
    host_key_fingerprint: str  # "SHA256:…", as `ssh-keygen -lf KEY -E sha256` prints it
    private_key: str = field(repr=False)

    @property
    def endpoint(self) -> str:
        """``host:port`` (``[host]:port`` for an IPv6 address), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class SshError(Exception):
    """An SSH worker cannot be used; the message says which and why (never the key)."""


class SshUnavailable(SshError):
    """The worker cannot be reached or does not let us log in."""


class HostKeyMismatch(SshError):
    """The server presented another host key than the one the worker is pinned to."""

    def __init__(self, endpoint: str, expected: str, presented: str) -> None:
        super().__init__(
            f"the SSH host key of {endpoint} does not match the pinned one: expected "
            f"{expected}, the server presented {presented}; refusing to connect"
        )
        self.expected = expected
        self.presented = presented


class _PinnedClient(asyncssh.SSHClient):
    """Accepts only the host key with the pinned fingerprint; notes when the connection ends."""

    def __init__(self, fingerprint: str) -> None:
        self._expected = fingerprint
        self.presented = ""
        self.lost: Exception | None = None
        self.closed = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Called during the key exchange (the pinned key list is empty on purpose)."""
        self.presented = key.get_fingerprint("sha256")
        return hmac.compare_digest(self.presented.encode(), self._expected.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed (``exc`` says why when it was not us who closed it)."""
        self.closed = True
        self.lost = exc


@dataclass
class _Entry:
    target: SshTarget
    conn: asyncssh.SSHClientConnection
    client: _PinnedClient
    sftp: asyncssh.SFTPClient | None = None

    @property
    def alive(self) -> bool:
        return not self.client.closed


class SshConnections:
    """One asyncssh connection per worker id, opened on first use and reused; replaced on
    the next use after it dropped. ``connects`` counts the connections made (for tests and
    the benchmark). ``close()`` closes them all."""

    def __init__(
        self, *, connect_timeout: float = 10.0, keepalive_interval: float = 5.0,
        keepalive_count_max: int = 2,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._keepalive_interval = keepalive_interval
        self._keepalive_count_max = keepalive_count_max
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.connects = 0

    async def get(self, worker_id: str, target: SshTarget) -> asyncssh.SSHClientConnection:
        """The worker's open connection, made now if there is none (or it dropped, or the
        target changed); raises HostKeyMismatch or SshUnavailable."""
        return (await self._entry(worker_id, target)).conn

    async def sftp(self, worker_id: str, target: SshTarget) -> asyncssh.SFTPClient:
        """An SFTP session on the worker's connection (one, opened on first use)."""
        entry = await self._entry(worker_id, target)
        if entry.sftp is None:
            try:
                entry.sftp = await entry.conn.start_sftp_client()
            except (OSError, asyncssh.Error) as exc:
                raise SshUnavailable(f"cannot start SFTP on {target.endpoint}: {_why(exc)}") from None
        return entry.sftp

    def lost(self, worker_id: str, conn: asyncssh.SSHClientConnection) -> str | None:
        """Why ``conn`` (a connection this gave out for ``worker_id``) ended, or None while
        it is up."""
        entry = self._entries.get(worker_id)
        if entry is None or entry.conn is not conn:
            return "the connection was replaced"
        if entry.alive:
            return None
        return _why(entry.client.lost) if entry.client.lost is not None else "the connection closed"

    async def close(self) -> None:
        """Close every connection and wait until they are closed."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            _close(entry)
        for entry in entries:
            await entry.conn.wait_closed()

    async def _entry(self, worker_id: str, target: SshTarget) -> _Entry:
        entry = self._entries.get(worker_id)
        if entry is not None and entry.alive and entry.target == target:
            return entry
        lock = self._locks.setdefault(worker_id, asyncio.Lock())
        async with lock:
            entry = self._entries.get(worker_id)
            if entry is not None and entry.alive and entry.target == target:
                return entry
            if entry is not None:
                del self._entries[worker_id]
                _close(entry)
                if entry.client.lost is not None:
                    log.info("reconnecting to SSH worker", extra={
                        "worker_id": worker_id, "endpoint": target.endpoint,
                        "error": _why(entry.client.lost)})
            entry = await self._connect(target)
            self._entries[worker_id] = entry
            return entry

    async def _connect(self, target: SshTarget) -> _Entry:
        try:
            key = asyncssh.import_private_key(target.private_key)
        except (asyncssh.KeyImportError, ValueError, TypeError):
            # The library's message could quote the key; say only that it is unusable.
            raise SshUnavailable(
                f"the private key for {target.username}@{target.endpoint} cannot be read "
                "(OpenSSH or PEM text without a passphrase is needed)"
            ) from None
        client = _PinnedClient(target.host_key_fingerprint)
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client, target.host, target.port,
                username=target.username, client_keys=[key], known_hosts=asyncssh.SSHKnownHosts(),
                server_host_key_algs="default", config=None, agent_path=None, password=None,
                kbdint_auth=False, preferred_auth="publickey",
                connect_timeout=self._connect_timeout, login_timeout=self._connect_timeout,
                keepalive_interval=self._keepalive_interval,
                keepalive_count_max=self._keepalive_count_max,
            )
        except asyncssh.HostKeyNotVerifiable:
            if client.presented and client.presented != target.host_key_fingerprint:
                log.warning("SSH host key mismatch", extra={
                    "endpoint": target.endpoint, "expected": target.host_key_fingerprint,
                    "presented": client.presented})
                raise HostKeyMismatch(target.endpoint, target.host_key_fingerprint,
                                      client.presented) from None
            raise SshUnavailable(f"cannot connect to {target.endpoint}: the host key could not "
                                 "be verified") from None
        except asyncssh.PermissionDenied:
            raise SshUnavailable(
                f"cannot log in to {target.endpoint} as {target.username!r}: the server refused "
                "the key"
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise SshUnavailable(f"cannot connect to {target.endpoint}: {_why(exc)}") from None
        self.connects += 1
        log.info("connected to SSH worker", extra={"endpoint": target.endpoint})
        return _Entry(target, conn, client)


def _close(entry: _Entry) -> None:
    if entry.sftp is not None:
        entry.sftp.exit()
    entry.conn.close()


def _why(exc: BaseException | None) -> str:
    if exc is None:
        return "the connection closed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
