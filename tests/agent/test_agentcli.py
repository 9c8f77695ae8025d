"""`shoal agent ...`: argument errors, registration against a stand-in HTTP server, and
`agent run` / `deregister-worker` against a real nats-server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg

from adapters import agentcli, remote
from adapters.bootstrap import build_agent
from adapters.cli import main
from adapters.nats import NatsBus
from adapters.nats.subjects import control, heartbeat
from agent.home import Registration, load_registration, registration_path, save_registration
from domain.signing import public_key_text
from tests.agent.service_support import WORKER, accounts, agent_env, new_key
from tests.integration.nats_support import eventually

REGISTER = ["agent", "register-worker", "--server", "http://shoal.test", "--api-key", "k",
            "--name", "web-1", "--worker-pool", "Linux", "--comms-style", "polling"]


def _one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [
    ["agent"],
    ["agent", "register-worker", "--server", "http://x", "--api-key", "k", "--name", "n",
     "--comms-style", "polling"],  # no --worker-pool
    [*REGISTER[:-1], "sideways"],
    [*REGISTER, "--capacity", "0"],
    ["agent", "run", "--unknown"],
])
def test_argument_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert _one_line(capsys.readouterr().err).startswith("shoal")


def test_run_without_a_registration_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "run", "--home", str(tmp_path / "nowhere")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(tmp_path / "nowhere" / "registration.json") in err and "register-worker" in err


def _registration(home: Path, urls: tuple[str, ...] = ("nats://127.0.0.1:1",)) -> Registration:
    reg = Registration(
        server_url="http://shoal.test", worker_id=WORKER, name="web-1", comms_style="polling",
        capacity=1, nats_urls=urls, nats_user="agent-w1", nats_password="pw",
        inbox_prefix="_INBOX_w1", work_consumer="work_w1", server_key=public_key_text(new_key()),
    )
    save_registration(home, reg)
    return reg


def test_a_registered_home_is_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _registration(tmp_path)
    assert main([*REGISTER, "--home", str(tmp_path)]) == 2
    assert "--force" in _one_line(capsys.readouterr().err)


def test_an_unreachable_server_exits_3_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    argv = [*REGISTER, "--home", str(tmp_path)]
    argv[argv.index("http://shoal.test")] = url
    assert main(argv) == 3
    assert url in _one_line(capsys.readouterr().err)
    assert not registration_path(tmp_path).exists()


# -- registration against a stand-in for the server's HTTP API --------------------------------

ANSWER = {
    "id": "w-9", "name": "web-1", "comms_style": "polling", "capacity": 3,
    "registration": {
        "worker_id": "w-9", "nats_urls": ["nats://10.0.0.1:4222"], "nats_user": "agent-w-9",
        "nats_password": "secret", "inbox_prefix": "_INBOX_w-9", "work_consumer": "work_w-9",
        "server_key": public_key_text(new_key()),
    },
}


def _serve_http(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]
                ) -> list[str]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return handler(request)

    def client(server: str, api_key: str, prog: str = "shoal") -> httpx.Client:
        return httpx.Client(base_url=server, headers={"X-Api-Key": api_key},
                            transport=httpx.MockTransport(record))

    monkeypatch.setattr(remote, "client", client)
    return seen


def test_register_keeps_the_credentials_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=ANSWER)

    _serve_http(monkeypatch, handler)
    home = tmp_path / "home"
    assert main([*REGISTER, "--worker-pool", "Windows", "--capacity", "3", "--policy", "Fast",
                 "--home", str(home)]) == 0
    assert bodies == [{"name": "web-1", "pool_ids": ["Linux", "Windows"], "comms_style": "polling",
                       "capacity": 3, "machine_policy_id": "Fast"}]
    reg = load_registration(home)
    assert (reg.worker_id, reg.capacity, reg.nats_urls, reg.server_url) == (
        "w-9", 3, ("nats://10.0.0.1:4222",), "http://shoal.test")
    assert stat.S_IMODE(registration_path(home).stat().st_mode) == 0o600
    assert "w-9" in capsys.readouterr().out


@pytest.mark.parametrize(("status", "detail", "code", "said"), [
    (422, "worker pool 'Linux' does not exist", 2, "'Linux'"),
    (401, "invalid API key", 3, "API key"),
    (409, "a worker named 'web-1' exists", 2, "--force"),
])
def test_register_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                         status: int, detail: str, code: int, said: str) -> None:
    _serve_http(monkeypatch, lambda _: httpx.Response(status, json={"detail": detail}))
    assert main([*REGISTER, "--home", str(tmp_path)]) == code
    assert said in _one_line(capsys.readouterr().err)
    assert not registration_path(tmp_path).exists()


def test_force_replaces_the_worker_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _registration(tmp_path)  # the home is registered too: --force replaces that as well
    posts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(1)
            return httpx.Response(409 if len(posts) == 1 else 201, json=ANSWER if len(posts) > 1 else {})
        if request.method == "GET":
            assert request.url.params["name"] == "web-1"
            return httpx.Response(200, json={"items": [{"id": "old-2", "name": "web-10"},
                                                       {"id": "old-1", "name": "web-1"}], "total": 2})
        return httpx.Response(204)

    seen = _serve_http(monkeypatch, handler)
    assert main([*REGISTER, "--home", str(tmp_path), "--force"]) == 0
    assert seen == ["POST /api/workers", "GET /api/workers", "DELETE /api/workers/old-1", "POST /api/workers"]
    assert load_registration(tmp_path).worker_id == "w-9"


# -- agent run / deregister-worker against NATS ------------------------------------------------


def test_run_exits_3_naming_nats_when_it_cannot_be_reached(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    _registration(tmp_path, (url,))
    container = build_agent(tmp_path, bus=NatsBus(reconnect_wait=0.1, connect_timeout=0.5))
    with pytest.raises(remote.CliError) as error:
        asyncio.run(agentcli._serve(container))
    assert error.value.code == 3 and url in str(error.value)


@pytest.mark.integration
def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    beats: list[bytes] = []

    async def note(msg: Msg) -> None:
        beats.append(msg.data)

    async def body() -> int:
        async with agent_env(tmp_path) as env:
            await env.bus.subscribe(heartbeat(WORKER), note)
            serving = asyncio.create_task(agentcli._serve(env.agent))
            await eventually(lambda: bool(beats), what="the agent's first heartbeat")
            os.kill(os.getpid(), signal.SIGTERM)
            return await asyncio.wait_for(serving, 5.0)

    assert asyncio.run(body()) == 0


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # nats-py: refused reconnects leak sockets
def test_run_exits_3_with_one_line_when_the_credentials_are_revoked(tmp_path: Path) -> None:
    async def body() -> None:
        async with agent_env(tmp_path) as env:
            serving = asyncio.create_task(agentcli._serve(env.agent))
            await eventually(lambda: env.agent.bus.is_connected, what="the agent to connect")
            (tmp_path / "nats" / "accounts.conf").write_text(accounts({}))
            await env.nats.reload()
            with pytest.raises(remote.CliError) as error:
                await asyncio.wait_for(serving, 5.0)
            assert error.value.code == 3
            assert f"shoal agent: {error.value}" == (
                "shoal agent: this worker's credentials were revoked on the server (the worker was "
                "deleted or deregistered); stopping")

    asyncio.run(body())
    gc.collect()


@pytest.mark.integration
def test_deregister_asks_the_server_over_nats_as_the_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[Any] = []

    async def answer(msg: Msg) -> None:
        asked.append(json.loads(msg.data))
        await msg.respond(b'{"ok": true}')

    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.bus.subscribe(control(WORKER), answer)
            home = env.agent.home
            code = await asyncio.to_thread(main, ["agent", "deregister-worker", "--home", str(home)])
            assert code == 0
            assert not registration_path(home).exists()

    asyncio.run(body())
    assert asked == [{"kind": "deregister"}]
    assert WORKER in capsys.readouterr().out
