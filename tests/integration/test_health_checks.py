"""Machine-policy health checks against a real nats-server and a real store: fake agents
(which verify the server's signature) answer ``shoal.agent.<id>.health``; the checker
records what they say, treats silence per the policy's connectivity rule, checks due
workers together and deletes workers its policy says to clean up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from adapters.nats import NatsBus, subjects
from adapters.workers.gateway import WorkerGateway
from adapters.workers.health import RECHECK_UNAVAILABLE_S, AgentHealthRunner, HealthChecker
from domain.actors import Actor, ActorKind
from domain.app import Shoal
from domain.errors import InvalidTransition, NotFound
from domain.messages import HealthAnswer as Answer
from domain.messages import HealthCheck, decode_instruction, encode
from domain.policies import DEFAULT_HEALTH_SCRIPT, CleanUp, Connectivity
from domain.signing import SIGNATURE_HEADER, verify
from domain.workers import CommsStyle, HealthStatus
from projections.workers import get_worker
from tests.helpers import TESTER, rid
from tests.integration.conftest import Views
from tests.integration.nats_support import bus_on, embedded
from tests.sshworkers import ssh_for

pytestmark = pytest.mark.integration

NODE = Actor(ActorKind.SYSTEM, "node:test", "Shoal server (test)")
FIRST_AFTER, SPREAD = 2.0, 10.0


@dataclass
class FakeAgents:
    """Agents that answer health checks on their own subjects, after ``delay`` seconds,
    and only when the request carries the server's signature."""

    bus: NatsBus
    key: Ed25519PrivateKey
    seen: list[HealthCheck] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def serve(self, worker_id: str, answer: Answer | None, delay: float = 0.0) -> None:
        """Answer every check with ``answer``; None: take the request and never answer."""

        async def on_health(msg: Msg) -> None:
            signature = (msg.headers or {}).get(SIGNATURE_HEADER)
            if not verify(self.key.public_key(), msg.data, signature):
                self.refused.append(msg.subject)
                return
            check = decode_instruction(msg.data)
            assert isinstance(check, HealthCheck) and check.worker_id == worker_id
            self.seen.append(check)
            if answer is None:
                return
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(delay)  # the "script" takes this long
            finally:
                self.in_flight -= 1
            await msg.respond(encode(answer))

        await self.bus.subscribe(subjects.agent_health(worker_id), on_health)


@dataclass
class Rig:
    app: Shoal
    views: Views
    checker: HealthChecker
    agents: FakeAgents
    alive: set[str]
    revoked: list[UUID]
    now: list[float]  # the checker's clock: tests move it

    def worker(self, policy_id: UUID | None = None, style: CommsStyle = CommsStyle.LISTENING) -> str:
        saved = self.app.register_worker(
            name=rid("worker"), pool_ids=(self.app.default_pool_id(),), comms_style=style,
            machine_policy_id=policy_id, ssh=ssh_for(style), actor=TESTER,
        )
        self.caught_up(saved.position)
        return str(saved.aggregate.id)

    def policy(self, **settings: Any) -> UUID:
        saved = self.app.create_policy(name=rid("policy"), actor=TESTER, **settings)
        self.caught_up(saved.position)
        return saved.aggregate.id

    def caught_up(self, position: int | None = None) -> None:
        target = position if position is not None else self.app.recorder.max_notification_id() or 0
        assert self.checker.watch.wait(target, 5.0)

    def health(self, worker_id: str) -> str:
        self.caught_up()
        row = get_worker(self.views, worker_id)
        assert row is not None
        return str(row["health_status"])

    async def round_at(self, t: float) -> None:
        """One scheduling round with the clock at ``t``, and every check it started."""
        self.caught_up()
        self.now[0] = t
        await self.checker.tick()
        await self.checker.settle()


@asynccontextmanager
async def rig(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any], **options: Any
) -> AsyncIterator[Rig]:
    runner = new_runner(app, views, poll_interval=0.05)
    runner.setup()
    runner.start()
    key = Ed25519PrivateKey.generate()
    alive: set[str] = set()
    revoked: list[UUID] = []
    now = [0.0]

    async def revoke(worker_id: UUID) -> None:
        revoked.append(worker_id)

    async with embedded(tmp_path) as nats, bus_on(nats.url, "server") as bus, \
            bus_on(nats.url, "agents") as agent_bus:
        runners = {CommsStyle.LISTENING: AgentHealthRunner(WorkerGateway(bus, key))}
        checker = HealthChecker(
            app, views, runner.watch, runners, NODE, revoke, is_alive=alive.__contains__,
            clock=lambda: now[0], first_check_after_s=FIRST_AFTER, first_check_spread_s=SPREAD,
            **{"answer_timeout_s": 1.0, **options},
        )
        try:
            yield Rig(app, views, checker, FakeAgents(agent_bus, key), alive, revoked, now)
        finally:
            await checker.stop()


def test_the_agents_verdict_is_recorded(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            verdicts = {
                "healthy": Answer("healthy", "disk space free: 80%"),
                "has_warnings": Answer("has_warnings", "only 8% disk space free"),
                "unhealthy": Answer("unhealthy", "only 1% disk space free"),
            }
            for status, answer in verdicts.items():
                wid = r.worker()
                await r.agents.serve(wid, answer)
                result = await r.checker.check_now(UUID(wid))
                assert (result.status.value, result.detail, result.recorded) == (status, answer.detail, True)
                assert r.health(wid) == status
                assert app.get_worker(UUID(wid)).health_detail == answer.detail
            assert r.agents.refused == []
            assert {c.script for c in r.agents.seen} == {DEFAULT_HEALTH_SCRIPT}

    asyncio.run(body())


def test_a_new_worker_is_unknown_and_a_silent_agent_is_unavailable(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            nobody, mute = r.worker(), r.worker()
            assert r.health(nobody) == r.health(mute) == "unknown"
            await r.agents.serve(mute, None)  # takes the request, never answers

            gone = await r.checker.check_now(UUID(nobody))
            assert gone.status is HealthStatus.UNAVAILABLE and gone.recorded
            assert "did not answer" in gone.detail and "no responders" in gone.detail
            started = time.monotonic()
            quiet = await r.checker.check_now(UUID(mute))
            assert time.monotonic() - started < 3.0
            assert quiet.status is HealthStatus.UNAVAILABLE
            assert "did not answer the health check within 1s" in quiet.detail
            assert r.health(nobody) == r.health(mute) == "unavailable"

    asyncio.run(body())


def test_a_worker_that_may_be_offline_keeps_its_status_when_unreachable(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            roaming = r.policy(connectivity=Connectivity.MAY_BE_OFFLINE)
            laptop, fresh = r.worker(roaming), r.worker(roaming)
            await r.agents.serve(laptop, Answer("healthy", "fine"))
            await r.checker.check_now(UUID(laptop))
            assert r.health(laptop) == "healthy"
            await r.agents.bus.unsubscribe(r.agents.bus.subscriptions[-1])  # the laptop goes away
            await r.agents.bus.flush()  # the server knows before the next check

            before = app.recorder.max_notification_id()
            away = await r.checker.check_now(UUID(laptop))
            never = await r.checker.check_now(UUID(fresh))
            assert app.recorder.max_notification_id() == before  # nothing recorded
            assert (away.status, away.recorded, away.position) == (HealthStatus.UNAVAILABLE, False, None)
            assert "may be offline" in away.detail and "no responders" in away.detail
            assert not never.recorded
            assert (r.health(laptop), r.health(fresh)) == ("healthy", "unknown")

    asyncio.run(body())


def test_first_checks_follow_coming_online_staggered_then_every_interval(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            policy = r.policy(health_check_interval_s=30)
            online = [r.worker(policy) for _ in range(20)]
            offline = r.worker(policy)
            for wid in online:
                await r.agents.serve(wid, Answer("healthy", "ok"))
            r.alive.update(online)

            def checked() -> list[str]:
                return [c.worker_id for c in r.agents.seen]

            await r.round_at(0.0)  # first seen online: checked soon, not at once
            assert checked() == []
            await r.round_at(FIRST_AFTER + SPREAD / 2)
            halfway = len(checked())
            assert 0 < halfway < 20  # staggered over the spread
            await r.round_at(FIRST_AFTER + SPREAD)
            assert sorted(checked()) == sorted(online)  # each once, the silent one not yet
            assert all(r.health(w) == "healthy" for w in online)

            await r.round_at(FIRST_AFTER + SPREAD + 1)
            assert len(checked()) == 20  # not due again before the interval
            await r.round_at(FIRST_AFTER + SPREAD + 30)
            assert sorted(checked()) == sorted(online * 2)
            await r.round_at(0.0 + SPREAD + FIRST_AFTER + 31)
            assert r.health(offline) == "unavailable"  # one interval after it was first listed

            r.alive.discard(online[0])
            await r.round_at(100.0)
            before = checked().count(online[0])
            r.alive.add(online[0])  # back online: checked soon, not an interval later
            await r.round_at(101.0)
            assert checked().count(online[0]) == before
            await r.round_at(101.0 + FIRST_AFTER + SPREAD)
            assert checked().count(online[0]) == before + 1

    asyncio.run(body())


def test_clean_up_deletes_workers_unavailable_for_longer_than_the_policy_says(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            tidy = r.policy(cleanup=CleanUp.DELETE_UNAVAILABLE, cleanup_after_s=60)
            doomed, back, kept = r.worker(tidy), r.worker(tidy), r.worker()
            for wid in (doomed, back, kept):
                await r.checker.check_now(UUID(wid))  # nobody answers: unavailable
            await r.round_at(0.0)  # unavailable since now, as far as this run knows
            await r.round_at(60.0)
            assert r.revoked == []  # not longer than 60 s yet
            r.alive.add(back)  # its agent is heard from again
            await r.round_at(61.0)
            assert r.revoked == [UUID(doomed)]
            with pytest.raises(NotFound):
                app.get_worker(UUID(doomed))
            r.caught_up()
            assert get_worker(views, doomed) is None
            assert r.health(back) == r.health(kept) == "unavailable"
            assert app.get_worker(UUID(back)) and app.get_worker(UUID(kept))
            last: Any = list(app.events.get(UUID(doomed)))[-1]
            assert (type(last).__name__, last.actor) == ("Deregistered", NODE)

    asyncio.run(body())


def test_due_workers_are_checked_together(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            workers = [r.worker() for _ in range(50)]
            for wid in workers:
                await r.agents.serve(wid, Answer("has_warnings", "slow disk"), delay=0.5)
            r.alive.update(workers)
            await r.round_at(0.0)
            started = time.monotonic()
            await r.round_at(FIRST_AFTER + SPREAD)  # every first check is due
            elapsed = time.monotonic() - started
            assert len(r.agents.seen) == 50
            assert elapsed < 3.0, f"50 checks of 0.5 s took {elapsed:.1f}s"
            assert r.agents.most_in_flight >= 40  # together, not a few at a time
            assert {r.health(w) for w in workers} == {"has_warnings"}

    asyncio.run(body())


def test_ssh_workers_are_not_checked_yet(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            ssh = r.worker(style=CommsStyle.SSH)
            with pytest.raises(InvalidTransition, match="SSH workers are not supported yet"):
                await r.checker.check_now(UUID(ssh))
            with pytest.raises(NotFound):
                await r.checker.check_now(UUID(int=7))

    asyncio.run(body())


def test_a_heartbeating_worker_that_missed_a_check_is_checked_again_soon(
    tmp_path: Path, app: Shoal, views: Views, new_runner: Callable[..., Any]
) -> None:
    async def body() -> None:
        async with rig(tmp_path, app, views, new_runner) as r:
            policy = r.policy(health_check_interval_s=3600)
            wid = r.worker(policy)
            await r.agents.serve(wid, None)  # busy: takes the request, never answers
            r.alive.add(wid)
            await r.round_at(0.0)
            await r.round_at(FIRST_AFTER + SPREAD)
            assert r.health(wid) == "unavailable"  # still heartbeating, though
            await r.agents.bus.unsubscribe(r.agents.bus.subscriptions[-1])
            await r.agents.serve(wid, Answer("healthy", "back"))
            await r.round_at(FIRST_AFTER + SPREAD + RECHECK_UNAVAILABLE_S / 2)
            assert r.health(wid) == "unavailable"
            await r.round_at(FIRST_AFTER + SPREAD + 1 + RECHECK_UNAVAILABLE_S)
            assert r.health(wid) == "healthy"  # not an hour later

    asyncio.run(body())
