"""The server's NATS: embedded by default (started and stopped with it), or external."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from adapters.nats.embedded import EmbeddedNats, EmbeddedNatsConfig
from tests.e2e.server import SHOAL, ServerProcess

pytestmark = pytest.mark.e2e


def _nats_pids(data_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"{data_dir}/nats/nats.conf"],
                           capture_output=True, text=True)
    return found.stdout.split()


def test_the_server_runs_its_own_nats_and_stops_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        health = httpx.get(f"{server.url}/api/health").json()
        assert health["nats"] == "connected" and health["status"] == "ok"
        assert len(_nats_pids(tmp_path / "data")) == 1
        assert any('"nats":"nats://127.0.0.1:' in line for line in server.lines)
        assert not any('"nats":"nats://127.0.0.1:4222"' in line for line in server.lines)
    finally:
        assert server.stop() == 0
    assert _nats_pids(tmp_path / "data") == []


def test_an_external_nats_is_used_instead(tmp_path: Path) -> None:
    external = EmbeddedNats(EmbeddedNatsConfig(tmp_path / "external"))
    asyncio.run(external.start())
    try:
        server = ServerProcess(tmp_path / "data", extra=["--nats-url", external.url]).start()
        try:
            assert httpx.get(f"{server.url}/api/health").json()["nats"] == "connected"
            assert _nats_pids(tmp_path / "data") == []  # no embedded one
        finally:
            server.stop()
    finally:
        asyncio.run(external.stop())


def test_registering_an_agent_while_nats_is_down_is_503_not_500(tmp_path: Path) -> None:
    external = EmbeddedNats(EmbeddedNatsConfig(tmp_path / "external"))
    asyncio.run(external.start())
    server = ServerProcess(tmp_path / "data", extra=["--nats-url", external.url]).start()
    try:
        asyncio.run(external.stop())
        with server.client() as c:
            pool = c.get("/api/worker-pools").json()["items"][0]["id"]
            r = c.post("/api/workers", json={"name": "away", "pool_ids": [pool],
                                             "comms_style": "polling"}, timeout=30)
            listed = c.get("/api/workers", params={"name": "away"}).json()
        assert r.status_code == 503, r.text
        assert "message bus is not available" in r.json()["detail"]
        assert listed["total"] == 0, "the half-made registration was taken back"
    finally:
        server.stop()
        asyncio.run(external.stop())


def test_an_unreachable_external_nats_is_exit_3_naming_it(tmp_path: Path) -> None:
    r = subprocess.run(
        [SHOAL, "server", "--data-dir", str(tmp_path), "--port", "0",
         "--nats-url", "nats://agent:hunter2@127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == ["shoal server: cannot reach NATS at 127.0.0.1:1"]
    assert "hunter2" not in r.stderr + r.stdout
