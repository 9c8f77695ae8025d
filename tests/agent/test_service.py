"""AgentService against a real nats-server, with the agent's real NATS permissions; the
test plays the server (signs instructions, reads reports from the stream)."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from adapters.nats.subjects import heartbeat
from agent.service import AgentExit
from domain.messages import decode_heartbeat
from tests.agent.service_support import WORKER, Env, accounts, agent_env, exec_step, new_key
from tests.integration.nats_support import eventually

pytestmark = pytest.mark.integration


def _no_permission_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [str(r.__dict__.get("error")) for r in caplog.records if r.getMessage() == "nats error"]
    assert not [e for e in errors if "permission" in e.lower()], errors


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "shoal.agent" and r.getMessage().startswith("refused instruction: ")]


def test_listening_round_trip_reports_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    step = exec_step('echo one; echo two >&2; echo "$SHOAL_TASK_ID $GREETING"; exit 3',
                     env={"GREETING": "hello"}, assignment=7)

    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            answer = await env.exec(step)
            assert answer.accepted, answer
            got = await env.finished(step)
            assert [r.seq for r in got] == list(range(len(got)))
            assert got[0].kind == "started" and got[0].pid
            assert got[-1].kind == "finished"
            assert (got[-1].outcome, got[-1].exit_code) == ("failed", 3)
            assert all(r.assignment == 7 and r.worker_id == WORKER for r in got)
            lines = [(s, t) for r in got if r.kind == "log" for _, s, t in r.lines]
            # Two pipes: order holds within each stream, not across them.
            assert [t for s, t in lines if s == "stdout"] == ["one", "t1 hello"]
            assert [t for s, t in lines if s == "stderr"] == ["two"]

    asyncio.run(body())
    _no_permission_errors(caplog)


def test_heartbeats_count_running_steps(tmp_path: Path) -> None:
    beats: list[int] = []

    async def note(msg: Msg) -> None:
        beats.append(decode_heartbeat(msg.data).running)

    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.bus.subscribe(heartbeat(WORKER), note)
            await env.start_agent()
            await eventually(lambda: 0 in beats, what="an idle heartbeat")
            step = exec_step("exec sleep 30")
            assert (await env.exec(step)).accepted
            await eventually(lambda: beats[-1] == 1, what="a heartbeat with the step running")
            assert (await env.cancel(step)) == {"ok": True}
            got = await env.finished(step)
            assert (got[-1].outcome, got[-1].reason) == ("cancelled", "cancelled")

    asyncio.run(body())


def test_polling_agent_runs_work_queued_while_it_was_away(tmp_path: Path) -> None:
    async def body() -> None:
        async with agent_env(tmp_path, comms_style="polling") as env:
            step = exec_step("echo queued")
            await env.queue(step)
            await env.start_agent()
            got = await env.finished(step)
            assert got[-1].outcome == "success"
            assert any(t == "queued" for r in got for _, _, t in r.lines)
            await eventually(env.work_queue_empty, what="the instruction to be acked")

    asyncio.run(body())


def test_polling_agent_drops_bad_instructions_and_runs_the_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    forged, other, expired = (tmp_path / n for n in ("forged", "other", "expired"))

    async def body() -> None:
        async with agent_env(tmp_path, comms_style="polling", capacity=1) as env:
            await env.queue(exec_step(f"touch {forged}", task="a"), key=new_key())
            await env.queue(exec_step(f"touch {other}", task="b", worker="w2"))
            await env.queue(exec_step(f"touch {expired}", task="c", expires_in=-1))
            good = exec_step("true", task="d")
            await env.queue(good)
            await env.start_agent()
            assert (await env.finished(good))[-1].outcome == "success"
            await eventually(env.work_queue_empty, what="every instruction to be acked")
            assert {r.task_id for r in env.reports} == {"d"}

    asyncio.run(body())
    assert not forged.exists() and not other.exists() and not expired.exists()
    refusals = _refusals(caplog)
    assert len(refusals) == 3, refusals
    assert "signature" in refusals[0] and "'w2'" in refusals[1] and "expired" in refusals[2]
    _no_permission_errors(caplog)


def test_listening_agent_refuses_forged_unsigned_and_misaddressed_steps(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            step = exec_step(f"touch {marker}")
            forged = await env.exec(step, key=new_key())
            unsigned = await env.exec(step, headers={})
            # Signed by the server, but for another worker: a replay aimed at this agent.
            other = await env.exec(exec_step(f"touch {marker}", worker="w2"))
            assert not forged.accepted and "signature" in forged.reason
            assert not unsigned.accepted and "not signed" in unsigned.reason
            assert not other.accepted and "'w2'" in other.reason
            assert env.agent.service.running == 0

    asyncio.run(body())
    assert not marker.exists()


def test_a_replayed_instruction_runs_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    async def body() -> None:
        # Capacity 1: queued steps run strictly in order, so once `after` has finished,
        # any second run of `step` would have happened already.
        async with agent_env(tmp_path, comms_style="polling", capacity=1) as env:
            step = exec_step(f"echo run >> {runs}")
            await env.queue(step)
            await env.queue(step)
            after = exec_step("true", task="after")
            await env.queue(after)
            await env.start_agent()
            await env.finished(after)
            await eventually(env.work_queue_empty, what="the replay to be acked")

    asyncio.run(body())
    assert runs.read_text() == "run\n"


def test_listening_replay_is_answered_without_a_second_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    async def body() -> None:
        async with agent_env(tmp_path, capacity=1) as env:
            await env.start_agent()
            step = exec_step(f"echo run >> {runs}; echo ready; exec sleep 30")
            assert (await env.exec(step)).accepted
            again = await env.exec(step)
            # Not "at capacity": the agent knows this one, and it runs already.
            assert again.accepted and again.reason == "already accepted"
            assert env.agent.service.running == 1
            await env.read_reports(lambda rs: any(t == "ready" for r in rs for _, _, t in r.lines))
            await env.cancel(step)
            await env.finished(step)

    asyncio.run(body())
    assert runs.read_text() == "run\n"


def test_a_full_listening_agent_refuses_more_work_and_cancel_frees_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with agent_env(tmp_path, capacity=1) as env:
            await env.start_agent()
            first = exec_step("exec sleep 30", task="first")
            assert (await env.exec(first)).accepted
            second = exec_step("true", task="second")
            refused = await env.exec(second)
            assert (refused.accepted, refused.reason) == (False, "at capacity")
            assert await env.cancel(first) == {"ok": True}
            assert (await env.finished(first))[-1].outcome == "cancelled"
            await eventually(lambda: env.agent.service.running == 0, what="the slot to free")
            assert (await env.exec(second)).accepted
            assert (await env.finished(second))[-1].outcome == "success"
            assert await env.cancel(second) == {"ok": False}  # no longer running

    asyncio.run(body())


def test_a_listening_agent_follows_the_capacity_the_server_sends(tmp_path: Path) -> None:
    """Registered for one step at a time; the worker's capacity raised on the server to 2
    (each instruction says so): the agent takes a second step, and refuses a third."""
    async def body() -> None:
        async with agent_env(tmp_path, capacity=1) as env:
            await env.start_agent()
            first = exec_step("exec sleep 30", task="first")
            assert (await env.exec(first)).accepted
            assert (await env.exec(exec_step("exec sleep 30", task="second", capacity=2))).accepted
            third = await env.exec(exec_step("true", task="third", capacity=2))
            assert (third.accepted, third.reason) == (False, "at capacity")
            assert env.agent.service.capacity == 2
            # Lowered again: nothing new until the running steps are below it.
            lowered = await env.exec(exec_step("true", task="fourth", capacity=1))
            assert (lowered.accepted, lowered.reason) == (False, "at capacity")

    asyncio.run(body())


def test_a_polling_agent_fetches_up_to_the_capacity_the_server_sends(tmp_path: Path) -> None:
    """Registered for one step at a time, three queued steps saying the capacity is now 3
    run side by side (all three are running at once), not one after another."""
    async def body() -> None:
        async with agent_env(tmp_path, comms_style="polling", capacity=1) as env:
            marks = [tmp_path / f"running-{i}" for i in range(3)]
            # Each step waits until all three have started; one at a time, none would end.
            steps = [exec_step(f"touch {mark}; for _ in $(seq 100); do "
                               f"[ -e {marks[0]} ] && [ -e {marks[1]} ] && [ -e {marks[2]} ] && exit 0; "
                               "sleep 0.05; done; exit 7", task=f"t{i}", capacity=3)
                     for i, mark in enumerate(marks)]
            for step in steps:
                await env.queue(step)
            await env.start_agent()
            for step in steps:
                assert (await env.finished(step, timeout=15))[-1].outcome == "success"

    asyncio.run(body())


@pytest.mark.parametrize(("script", "status", "detail"), [
    ("echo all good", "healthy", "all good"),
    ('shoal_warn "disk is 91% full"; echo carried on', "has_warnings", "disk is 91% full"),
    ("echo oops >&2; exit 1", "unhealthy", "exit code 1"),
    ('shoal_fail "no docker"; echo never', "unhealthy", "no docker"),
])
def test_health_check_statuses(tmp_path: Path, script: str, status: str, detail: str) -> None:
    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            answer = await env.health(script)
            assert answer.status == status, answer
            assert detail in answer.detail
            assert "never" not in answer.detail

    asyncio.run(body())


def test_a_forged_health_check_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            answer = await env.health(f"touch {marker}", key=new_key())
            assert answer.status == "unhealthy" and "refused instruction" in answer.detail

    asyncio.run(body())
    assert not marker.exists()


def test_reports_survive_a_nats_restart_mid_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    go = tmp_path / "go"

    def retried() -> bool:
        return any(r.getMessage() == "report not delivered; retrying" for r in caplog.records)

    async def body() -> None:
        async with agent_env(tmp_path / "probe") as probe:
            port = probe.nats.port  # free a moment ago: a fixed port survives the restart
        async with agent_env(tmp_path / "data", port=port) as env:
            await env.start_agent()
            step = exec_step(f"echo before; while [ ! -e {go} ]; do sleep 0.02; done; echo after")
            assert (await env.exec(step)).accepted
            await env.read_reports(lambda rs: any(t == "before" for r in rs for _, _, t in r.lines))
            await env.nats.stop()
            go.touch()  # the step ends while NATS is down: "after" and "finished" must wait
            await eventually(retried, what="a report to fail while NATS is down")
            await env.nats.start()
            got = await env.finished(step, timeout=10.0)
            assert [r.seq for r in got] == list(range(len(got)))
            assert got[-1].outcome == "success"
            texts = [t for r in got for _, s, t in r.lines if s == "stdout"]
            assert texts == ["before", "after"]

    asyncio.run(body())


def test_stop_cancels_running_steps_with_a_reason(tmp_path: Path) -> None:
    async def body() -> Env:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            step = exec_step("exec sleep 30")
            assert (await env.exec(step)).accepted
            await env.read_reports(lambda rs: any(r.kind == "started" for r in rs))
            await env.agent.service.stop(grace=5.0)
            got = await env.finished(step)
            assert (got[-1].outcome, got[-1].reason) == ("cancelled", "agent stopped")
            return env

    asyncio.run(body())


# nats-py leaks the socket of each refused reconnect attempt (it does not close the
# transport when CONNECT fails); the garbage collector's ResourceWarnings are not ours.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_revoked_credentials_end_the_agent(tmp_path: Path) -> None:
    async def body() -> None:
        async with agent_env(tmp_path) as env:
            await env.start_agent()
            step = exec_step("exec sleep 30")
            assert (await env.exec(step)).accepted
            await env.read_reports(lambda rs: any(r.kind == "started" for r in rs))
            (tmp_path / "nats" / "accounts.conf").write_text(accounts({}))
            await env.nats.reload()
            stop = asyncio.Event()
            result = await asyncio.wait_for(env.agent.service.run_until(stop), 5.0)
            assert result is AgentExit.REVOKED
            await eventually(lambda: env.agent.service.running == 0, what="the step to be killed")

    asyncio.run(body())
    gc.collect()  # while the ResourceWarnings are ignored, not in a later test
