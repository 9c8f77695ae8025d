"""SSH workers through the real server: registration over HTTP and `shoal worker add-ssh`,
changes, bad input, and the private key never coming back out (answers, audit log, server
output, the files the server writes)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from tests.e2e.server import SHOAL, ServerProcess
from tests.helpers import rid

pytestmark = pytest.mark.e2e

FP = "SHA256:" + "k" * 42 + "E"


def new_key() -> str:
    return str(asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())


def pieces(key: str) -> list[str]:
    """The key text and each of its base64 lines: none may show up anywhere."""
    return [key, *(line for line in key.splitlines() if line and not line.startswith("-----"))]


def ssh_body(**changes: Any) -> dict[str, Any]:
    return {"host": "10.0.0.7", "port": 2222, "username": "deploy", "host_key_fingerprint": FP,
            **changes}


def register(c: httpx.Client, ssh: dict[str, Any] | None, style: str = "ssh") -> httpx.Response:
    body: dict[str, Any] = {"name": rid("ssh"), "pool_ids": ["Default Worker Pool"], "comms_style": style}
    if ssh is not None:
        body["ssh"] = ssh
    return c.post("/api/workers", json=body)


def shoal(server: ServerProcess, *args: str, key: str | None = None, url: str | None = None) -> Any:
    return subprocess.run(
        [SHOAL, "worker", "add-ssh", "--server", url or server.url,
         "--api-key", key or server.admin_key, *args],
        capture_output=True, text=True, timeout=30,
    )


def assert_nowhere(server: ServerProcess, c: httpx.Client, key: str, *texts: str) -> None:
    secrets = pieces(key)
    events = c.get("/api/events", params={"limit": 1000}).text
    files = b"".join(p.read_bytes() for p in server.data_dir.glob("*.db*") if p.is_file())
    for where, text in [("answers", "\n".join(texts)), ("audit log", events),
                        ("server output", "".join(server.lines))]:
        assert not [s for s in secrets if s in text], f"private key leaked into the {where}"
    assert not [s for s in secrets if s.encode() in files], "private key stored in clear"


def test_an_ssh_worker_is_registered_and_its_key_never_shown(sqlite_server: ServerProcess) -> None:
    key = new_key()
    with sqlite_server.client() as c:
        r = register(c, ssh_body(private_key=key))
        assert r.status_code == 201, r.text
        worker = r.json()
        assert worker["comms_style"] == "ssh" and worker["registration"] is None
        assert worker["ssh"] == {
            "host": "10.0.0.7", "port": 2222, "username": "deploy", "host_key_fingerprint": FP,
            "private_key": "[redacted]", "private_key_ref": None,
        }
        one = c.get(f"/api/workers/{worker['id']}")
        assert one.json()["ssh"] == worker["ssh"]
        listed = c.get("/api/workers", params={"comms_style": "ssh"})
        assert worker["id"] in [w["id"] for w in listed.json()["items"]]
        pool_id = worker["pool_ids"][0]
        members = c.get(f"/api/worker-pools/{pool_id}/workers", params={"take": 1000})
        assert worker["id"] in [w["id"] for w in members.json()["items"]]
        audit = c.get("/api/events", params={"type": "Worker.SshConfigured", "limit": 1000}).json()
        mine = [e for e in audit["items"] if e["aggregate_id"] == worker["id"]]
        assert mine and mine[0]["data"]["private_key_sealed"] == "[redacted]"
        assert_nowhere(sqlite_server, c, key, r.text, one.text, listed.text, members.text)


@pytest.mark.parametrize(
    ("ssh", "style", "expected"),
    [
        (ssh_body(host_key_fingerprint="SHA256:short", private_key_ref="/k"), "ssh", "host_key_fingerprint"),
        (ssh_body(host_key_fingerprint="aa:bb:cc", private_key_ref="/k"), "ssh", "SHA256:"),
        (ssh_body(private_key=new_key(), private_key_ref="/k"), "ssh", "exactly one"),
        (ssh_body(), "ssh", "exactly one"),
        (None, "ssh", "needs ssh settings"),
        (ssh_body(private_key_ref="/k"), "polling", "only for an ssh worker"),
        (ssh_body(private_key_ref="keys/id"), "ssh", "absolute path"),
        (ssh_body(port=0, private_key_ref="/k"), "ssh", "port"),
        (ssh_body(host="", private_key_ref="/k"), "ssh", "host"),
        (ssh_body(private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nbm9wZQ==\n"
                  "-----END OPENSSH PRIVATE KEY-----\n"), "ssh", "not a private key"),
        (ssh_body(private_key="hunter2-not-a-key"), "ssh", "not a private key"),
        (ssh_body(private_key_ref="/k", password="x"), "ssh", "password"),
    ],
)
def test_bad_ssh_registrations_are_422(
    sqlite_server: ServerProcess, ssh: dict[str, Any] | None, style: str, expected: str
) -> None:
    with sqlite_server.client() as c:
        before = c.get("/api/workers").json()["total"]
        r = register(c, ssh, style)
        assert r.status_code == 422, r.text
        assert expected in r.json()["detail"], r.text
        assert c.get("/api/workers").json()["total"] == before
    given = (ssh or {}).get("private_key")
    if given:
        assert not [s for s in pieces(given) if s in r.text], "the key was echoed back"


def test_an_encrypted_key_is_refused_with_a_clear_message(sqlite_server: ServerProcess) -> None:
    encrypted = asyncssh.generate_private_key("ssh-ed25519").export_private_key(passphrase="pw").decode()
    with sqlite_server.client() as c:
        r = register(c, ssh_body(private_key=encrypted))
    assert r.status_code == 422 and "passphrase" in r.json()["detail"], r.text


def test_patch_changes_ssh_settings_and_replaces_the_key(sqlite_server: ServerProcess) -> None:
    first, second = new_key(), new_key()
    with sqlite_server.client() as c:
        worker = register(c, ssh_body(private_key=first)).json()
        url = f"/api/workers/{worker['id']}"

        moved = c.patch(url, json={"ssh": {"host": "web-02.internal", "port": 22}})
        assert moved.status_code == 200, moved.text
        assert moved.json()["ssh"]["host"] == "web-02.internal" and moved.json()["ssh"]["port"] == 22
        assert moved.json()["ssh"]["private_key"] == "[redacted]"

        to_ref = c.patch(url, json={"ssh": {"private_key_ref": "/srv/shoal/id_ed25519"}})
        assert to_ref.json()["ssh"]["private_key"] is None
        assert to_ref.json()["ssh"]["private_key_ref"] == "/srv/shoal/id_ed25519"

        rekeyed = c.patch(url, json={"ssh": {"private_key": second}})
        assert rekeyed.status_code == 200, rekeyed.text
        assert rekeyed.json()["ssh"]["private_key"] == "[redacted]"
        assert rekeyed.json()["ssh"]["private_key_ref"] is None
        assert rekeyed.json()["ssh"]["host"] == "web-02.internal"

        bad = [
            c.patch(url, json={"ssh": {"private_key": "garbage"}}),
            c.patch(url, json={"ssh": {"private_key": second, "private_key_ref": "/k"}}),
            c.patch(url, json={"ssh": {"host_key_fingerprint": "SHA256:nope"}}),
            c.patch(url, json={"ssh": {"port": 70000}}),
        ]
        assert [r.status_code for r in bad] == [422] * 4, [r.text for r in bad]
        agent = register(c, None, "polling").json()
        other = c.patch(f"/api/workers/{agent['id']}", json={"ssh": {"host": "x"}})
        assert other.status_code == 422 and "ssh worker" in other.json()["detail"], other.text
        assert c.get(url).json()["ssh"] == rekeyed.json()["ssh"]
        texts = [moved.text, to_ref.text, rekeyed.text, *(r.text for r in bad)]
        assert_nowhere(sqlite_server, c, first, *texts)
        assert_nowhere(sqlite_server, c, second, *texts)


def test_cli_add_ssh_registers_and_prints_the_id(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    key = new_key()
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(key)
    name = rid("cli-ssh")
    r = shoal(sqlite_server, "--name", name, "--worker-pool", "Default Worker Pool",
              "--host", "db-1.internal", "--username", "ops", "--host-key-fingerprint", FP,
              "--private-key-file", str(key_file), "--capacity", "2",
              "--policy", "Default Machine Policy")
    assert r.returncode == 0, r.stderr
    worker_id = r.stdout.strip()
    with sqlite_server.client() as c:
        worker = c.get(f"/api/workers/{worker_id}").json()
        assert (worker["name"], worker["capacity"], worker["comms_style"]) == (name, 2, "ssh")
        assert worker["ssh"]["port"] == 22 and worker["ssh"]["private_key"] == "[redacted]"
        assert_nowhere(sqlite_server, c, key, r.stdout, r.stderr)

    by_ref = shoal(sqlite_server, "--name", rid("cli-ref"), "--worker-pool", "Default Worker Pool",
                   "--host", "h", "--port", "2200", "--username", "u", "--host-key-fingerprint", FP,
                   "--private-key-ref", "/etc/shoal/key")
    assert by_ref.returncode == 0, by_ref.stderr


def test_cli_add_ssh_exit_codes(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    key_file.write_text(new_key())
    common = ["--host", "h", "--username", "u", "--host-key-fingerprint", FP,
              "--private-key-file", str(key_file)]
    taken = rid("taken")
    first = shoal(sqlite_server, "--name", taken, "--worker-pool", "Default Worker Pool", *common)
    assert first.returncode == 0, first.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        away = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = {
        "wrong key": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", "Default Worker Pool",
                            *common, key="shoal_" + rid("bogus")), 3),
        "unreachable": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", "Default Worker Pool",
                              *common, url=away), 3),
        "unknown pool": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", rid("nope"), *common), 2),
        "taken name": (shoal(sqlite_server, "--name", taken, "--worker-pool", "Default Worker Pool",
                             *common), 2),
        "bad fingerprint": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", "Default Worker Pool",
                                  "--host", "h", "--username", "u", "--host-key-fingerprint", "md5:aa",
                                  "--private-key-file", str(key_file)), 2),
        "missing key file": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", "Default Worker Pool",
                                   "--host", "h", "--username", "u", "--host-key-fingerprint", FP,
                                   "--private-key-file", str(tmp_path / "missing")), 2),
        "no key at all": (shoal(sqlite_server, "--name", rid("w"), "--worker-pool", "Default Worker Pool",
                                "--host", "h", "--username", "u", "--host-key-fingerprint", FP), 2),
    }
    for what, (r, code) in cases.items():
        assert r.returncode == code, (what, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (what, r.stderr)
        assert not r.stdout.strip(), (what, r.stdout)
