"""The agent's home folder: what registration handed over, kept with mode 0600.

``registration.json`` holds the worker id, the NATS URLs and this agent's own NATS user
and password, and the server's public key pinned at registration; ``work/`` holds the
step working folders."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

REGISTRATION_FILE = "registration.json"


class HomeError(RuntimeError):
    """The home folder has no usable registration."""


@dataclass(frozen=True)
class Registration:
    """Everything ``shoal agent run`` needs to serve as this worker."""

    server_url: str
    worker_id: str
    name: str
    comms_style: str  # listening | polling
    capacity: int
    nats_urls: tuple[str, ...]
    nats_user: str
    nats_password: str
    inbox_prefix: str
    work_consumer: str
    server_key: str  # ed25519:<base64>, pinned at registration


def default_home() -> Path:
    """``$SHOAL_AGENT_HOME`` or ``~/.shoal-agent``."""
    return Path(os.environ.get("SHOAL_AGENT_HOME") or Path.home() / ".shoal-agent")


def registration_path(home: Path) -> Path:
    """Where the registration of the agent in ``home`` lives."""
    return home / REGISTRATION_FILE


def save_registration(home: Path, registration: Registration) -> Path:
    """Write the registration; the folder becomes 0700 and the file 0600 (it holds the
    agent's NATS password), written aside and renamed so a crash leaves the old one."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    path = registration_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**asdict(registration), "nats_urls": list(registration.nats_urls)}, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def load_registration(home: Path) -> Registration:
    """The registration in ``home``; HomeError naming the file when missing or damaged."""
    path = registration_path(home)
    try:
        data = json.loads(path.read_text())
        data["nats_urls"] = tuple(data["nats_urls"])
        return Registration(**data)
    except FileNotFoundError:
        raise HomeError(f"{path} does not exist: run `shoal agent register-worker` first") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise HomeError(f"{path} cannot be read: {exc}") from None


def lock_home(home: Path) -> int:
    """Hold the home folder for this process (released when it exits): two agents on
    one home would share a worker identity and kill each other's steps. Returns the
    lock's file descriptor; HomeError when another agent holds it."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HomeError(f"another agent is running with the home folder {home}") from None
    return fd


def forget_registration(home: Path) -> None:
    """Remove the registration file (after deregistering)."""
    registration_path(home).unlink(missing_ok=True)
