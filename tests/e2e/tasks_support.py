"""Shared helpers for the end-to-end tests of tasks, processes and server-side steps:
a server with extra options, waiting on tasks, reading logs and events, a certificate,
and a real SMTP server to receive what email steps send."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess, drop_schema, schema_url
from tests.helpers import wait_until

FINAL = ("success", "failed", "cancelled", "timed_out")
BUILT_IN = "built-in worker"
# Set in the server's own environment; a script must never see it (minimal environment).
CANARY = "SHOAL_E2E_SERVER_ONLY"


class OptionServer(ServerProcess):
    """A ServerProcess with extra `shoal server` options and a canary variable in the
    server's environment (scripts must not see it)."""

    def __init__(self, data_dir: Path, database_url: str | None = None, extra: list[str] | None = None):
        super().__init__(data_dir, database_url, extra, env={CANARY: "leaked"})


@contextmanager
def served(
    request: pytest.FixtureRequest, data_dir: Path, backend: str = "sqlite", extra: list[str] | None = None
) -> Iterator[OptionServer]:
    """A started server on ``backend`` ("sqlite", or "postgres" in a schema of its own),
    stopped and cleaned up afterwards."""
    base = request.getfixturevalue("pg_url") if backend == "postgres" else None
    url = schema_url(base) if base else None
    proc = OptionServer(data_dir, url, extra)
    try:
        yield proc.start()
    finally:
        proc.stop()
        if base and url:
            drop_schema(base, url)


# ---- tasks ---------------------------------------------------------------------------


def script(c: httpx.Client, body: str, syntax: str = "bash", **extra: Any) -> dict[str, Any]:
    """Queue an ad-hoc script; the created task."""
    r = c.post("/api/tasks/script", json={"syntax": syntax, "script_body": body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def task(c: httpx.Client, tid: str) -> dict[str, Any]:
    r = c.get(f"/api/tasks/{tid}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_task(
    c: httpx.Client, tid: str, states: tuple[str, ...] = FINAL, timeout: float = 20
) -> dict[str, Any]:
    """The task once its state is one of ``states``."""
    return wait_until(
        lambda: (t := task(c, tid))["state"] in states and t, timeout, 0.05,
        what=f"task {tid} to reach {states}",
    )


def step(t: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in t["steps"] if s["name"] == name)


def wait_step(c: httpx.Client, tid: str, name: str, states: tuple[str, ...], timeout: float = 20) -> dict:
    """The task once step ``name`` is in one of ``states``."""
    return wait_until(
        lambda: step(t := task(c, tid), name)["state"] in states and t, timeout, 0.05,
        what=f"step {name!r} of task {tid} to reach {states}",
    )


def log(c: httpx.Client, tid: str) -> str:
    r = c.get(f"/api/tasks/{tid}/log")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def lines_of(text: str, step_name: str, stream: str = "stdout") -> list[str]:
    """The text of the log lines one step wrote on ``stream``, in order."""
    marker = f" [{stream}] {step_name} | "
    return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]


def project(c: httpx.Client, name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A new project with this process."""
    r = c.post("/api/projects", json={"name": name})
    assert r.status_code == 201, r.text
    p = r.json()
    r = c.put(f"/api/projects/{p['id']}/process", json={"steps": steps})
    assert r.status_code == 200, r.text
    return p


def run(c: httpx.Client, project_id: str) -> dict[str, Any]:
    r = c.post(f"/api/projects/{project_id}/runs", json={})
    assert r.status_code == 201, r.text
    return r.json()


def sh(name: str, body: str, **extra: Any) -> dict[str, Any]:
    """A bash script step."""
    return {"name": name, "action": "script", "syntax": "bash", "script_body": body, **extra}


def default_pool(c: httpx.Client) -> dict[str, Any]:
    return next(p for p in c.get("/api/worker-pools").json()["items"] if p["is_default"])


# ---- events and counts ---------------------------------------------------------------


def events(c: httpx.Client, type_: str | None = None, after: int = 0) -> list[dict[str, Any]]:
    """Every audit event after ``after`` (optionally of one type), paging to the end."""
    got: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"after": after, "limit": 1000}
        if type_:
            params["type"] = type_
        r = c.get("/api/events", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        got += page["items"]
        if not page["items"] or page.get("next") is None:
            return got
        after = page["items"][-1]["position"]


def position(c: httpx.Client) -> int:
    """The last position of the event store, as /api/health reports it."""
    return int(c.get("/api/health").json()["position"])


def task_total(c: httpx.Client) -> int:
    return int(c.get("/api/tasks", params={"take": 1}).json()["total"])


def pgrep(pattern: str) -> list[str]:
    """Processes whose command line matches ``pattern`` (not this one)."""
    r = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    assert r.returncode in (0, 1), r.stderr
    return [line for line in r.stdout.splitlines() if "pgrep" not in line]


def kill_matching(pattern: str) -> None:
    """Clean up after a failed test: end the test's own marked processes by pid."""
    for line in pgrep(pattern):
        with suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


# ---- certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    pem: str
    key_pem: str
    subject_cn: str
    sha256: str


def self_signed(cn: str) -> Cert:
    """A fresh self-signed certificate and its private key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return Cert(
        cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, cn,
        cert.fingerprint(hashes.SHA256()).hex(),
    )


# ---- SMTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """What a real SMTP server (aiosmtpd, in this process) received."""

    port: int = 0
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1 and a free port, for the duration of the block."""
    from aiosmtpd.controller import Controller

    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def wait_for_time(seconds: float) -> None:
    """A short, deliberate pause (something must NOT happen in that time)."""
    time.sleep(seconds)
