"""A throw-away OpenSSH sshd for the SSH worker tests and the SSH benchmark.

:class:`Sshd` starts Debian's ``/usr/sbin/sshd -D -e -f CONFIG`` on a free 127.0.0.1 port,
with its own ed25519 host key, its own user key in its own authorized_keys, and its own
config (no system sshd, no port 22). ``stop()`` kills the listener and every per-connection
sshd of this instance (what a crashed or rebooted host looks like to a client); ``start()``
brings it back on the same port and key. The ``sshd`` fixture (a missing sshd fails in CI,
skips elsewhere) yields a started one and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


class Sshd:
    """One sshd instance in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = getpass.getuser()
        folder.mkdir(parents=True, exist_ok=True)
        self.host_key = folder / "host_ed25519"
        self.user_key = folder / "user_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shoal-test",
                            "-f", str(key)], check=True)
        (folder / "authorized_keys").write_text(self.user_key.with_suffix(".pub").read_text())
        self.private_key = self.user_key.read_text()
        out = subprocess.run(["ssh-keygen", "-lf", str(self.host_key.with_suffix(".pub")), "-E", "sha256"],
                             check=True, capture_output=True, text=True).stdout
        self.fingerprint = out.split()[1]
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
            "MaxSessions 100\n"
            "MaxStartups 100:30:200\n"
            "LogLevel INFO\n"
        )
        self.log = folder / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until its port accepts connections."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the listener and every per-connection sshd of this instance (their session
        shells are left to notice on their own, as after a crash)."""
        if self._process is None:
            return
        pids = self.sshd_pids()
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None

    def sshd_pids(self) -> list[int]:
        """The per-connection sshd processes of this instance (not their session shells)."""
        if self._process is None:
            return []
        return [pid for pid in _descendants(self._process.pid) if _comm(pid) == "sshd"]

    def ssh_command(self, *remote: str) -> list[str]:
        """An ``ssh`` command line that logs in to this sshd with the user key."""
        return ["ssh", "-q", "-p", str(self.port), "-i", str(self.user_key), "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={os.devnull}", "-F", os.devnull,
                f"{self.user}@{self.host}", *remote]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def require_sshd() -> None:
    """Fail (CI=true) or skip (elsewhere) when OpenSSH's sshd is not installed."""
    if os.path.exists(SSHD) and shutil.which("ssh-keygen"):
        return
    reason = f"OpenSSH's sshd ({SSHD}) and ssh-keygen are needed (Debian: apt-get install openssh-server)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)")
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[Sshd]:
    """A started :class:`Sshd` in ``folder``, stopped on exit."""
    server = Sshd(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A throw-away sshd for one test (see the module docstring)."""
    require_sshd()
    with running_sshd(tmp_path / "sshd") as server:
        yield server
