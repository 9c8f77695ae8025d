"""The command line: help, and one clear line with the right exit code on failure."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.e2e.server import SHOAL

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args", [["--help"], ["server", "--help"], ["replay", "--help"]])
def test_help_works(args: list[str]) -> None:
    r = subprocess.run([SHOAL, *args], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: shoal" in r.stdout


def test_unknown_option_is_exit_2_with_one_line() -> None:
    r = subprocess.run([SHOAL, "server", "--frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--frobnicate" in r.stderr


@pytest.mark.parametrize("args", [
    ["events", "tail", "--api-key", "k", "--server", "localhost:8000"],
    ["agent", "register-worker", "--api-key", "k", "--name", "w", "--worker-pool", "p",
     "--comms-style", "polling", "--server", "http://127.0.0.1:99999"],
    ["agent", "deregister-worker", "--server", "http://[::1"],
    ["worker", "add-ssh", "--api-key", "k", "--name", "w", "--worker-pool", "p", "--host", "h",
     "--username", "u", "--server", "nats://127.0.0.1:4222"],
])
def test_a_server_that_is_not_an_http_url_is_exit_2(args: list[str]) -> None:
    r = subprocess.run([SHOAL, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "--server" in r.stderr, r.stderr


def test_unreachable_postgres_is_exit_3_naming_the_host_not_the_password(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed as soon as we leave: nothing listens there
    url = f"postgresql://shoal:hunter2secret@127.0.0.1:{port}/shoal"
    r = subprocess.run(
        [SHOAL, "server", "--data-dir", str(tmp_path), "--port", "0", "--database-url", url],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0]
    assert "hunter2secret" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_busy_port_is_exit_2(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [SHOAL, "server", "--data-dir", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert r.returncode == 2 and "cannot listen" in r.stderr


def test_replay_of_a_folder_without_a_store_is_exit_2(tmp_path) -> None:
    r = subprocess.run([SHOAL, "replay", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no event store" in r.stderr


def test_a_second_server_on_the_same_sqlite_data_is_exit_2(tmp_path) -> None:
    from tests.e2e.server import ServerProcess

    first = ServerProcess(tmp_path / "data").start()
    try:
        r = subprocess.run(
            [SHOAL, "server", "--data-dir", str(tmp_path / "data"), "--port", "0"],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "already using" in r.stderr
    finally:
        first.stop()
