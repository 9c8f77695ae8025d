"""Helpers for the agent service tests: the test plays the server against a real
nats-server (per-agent user with the real permissions, streams, the polling consumer),
signs instructions, and reads the agent's reports from the SHOAL_REPORTS stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from adapters.bootstrap import AgentContainer, build_agent
from adapters.nats import EmbeddedNats, NatsBus
from adapters.nats.access import hash_secret, render_accounts
from adapters.nats.subjects import (
    REPORTS_STREAM,
    SERVER_USER,
    WORK_STREAM,
    agent_cancel,
    agent_exec,
    agent_health,
    agent_user,
    inbox_prefix,
    reports,
    work,
    work_consumer,
)
from agent.executor import StepExecutor
from agent.home import Registration, save_registration
from agent.service import AgentConfig
from domain.messages import (
    CancelStep,
    ExecAnswer,
    ExecStep,
    HealthAnswer,
    HealthCheck,
    Report,
    decode_exec_answer,
    decode_health_answer,
    decode_report,
    encode,
)
from domain.signing import SIGNATURE_HEADER, load_private_key, new_private_key_pem, public_key_text, sign
from tests.integration.nats_support import bus_on, embedded

WORKER = "w1"
SERVER_PASSWORD = "server-secret"
AGENT_PASSWORD = "agent-secret"


def new_key() -> Ed25519PrivateKey:
    """A fresh server signing key."""
    return load_private_key(new_private_key_pem())


def exec_step(script: str, *, task: str = "t1", step: str = "s1", assignment: int = 1,
              worker: str = WORKER, expires_in: float = 60.0, **kw: Any) -> ExecStep:
    """An ExecStep for ``worker`` with test defaults."""
    fields: dict[str, Any] = {"syntax": "bash", "env": {}, "timeout_s": None, "max_log_bytes": 1 << 20}
    fields.update(kw)
    return ExecStep(worker_id=worker, task_id=task, step=step, assignment=assignment, script=script,
                    expires_at=time.time() + expires_in, **fields)


def signed(key: Ed25519PrivateKey, message: Any) -> tuple[bytes, dict[str, str]]:
    """The message's body and the header carrying its signature."""
    payload = encode(message)
    return payload, {SIGNATURE_HEADER: sign(key, payload)}


def accounts(agents: dict[str, str]) -> str:
    """accounts.conf with the server user and these agents (worker id -> password)."""
    return render_accounts(hash_secret(SERVER_PASSWORD), {w: hash_secret(p) for w, p in agents.items()})


@dataclass
class Env:
    """A nats-server, the test's 'server' connection, and an agent (not yet started)."""

    nats: EmbeddedNats
    bus: NatsBus
    key: Ed25519PrivateKey
    agent: AgentContainer
    tmp: Path
    reports: list[Report] = field(default_factory=list)
    _reader: JetStreamContext.PullSubscription | None = None

    async def start_agent(self) -> None:
        await self.agent.service.start()

    async def exec(self, step: ExecStep, key: Ed25519PrivateKey | None = None,
                   headers: dict[str, str] | None = None) -> ExecAnswer:
        """Send ``step`` to the listening agent, signed with ``key`` (the server's by default)."""
        payload, sig = signed(key or self.key, step)
        reply = await self.bus.request(agent_exec(WORKER), payload, timeout=5.0,
                                       headers=sig if headers is None else headers)
        return decode_exec_answer(reply.data)

    async def queue(self, step: ExecStep, key: Ed25519PrivateKey | None = None) -> None:
        """Put ``step`` on the polling agent's work queue."""
        payload, sig = signed(key or self.key, step)
        msg_id = f"{step.task_id}:{step.step}:{step.assignment}:{time.monotonic_ns()}"
        await self.bus.js_publish(work(WORKER), payload, msg_id, headers=sig)

    async def cancel(self, step: ExecStep) -> dict[str, Any]:
        import orjson

        payload, sig = signed(self.key, CancelStep(WORKER, step.task_id, step.step, step.assignment))
        reply = await self.bus.request(agent_cancel(WORKER), payload, timeout=5.0, headers=sig)
        answer: dict[str, Any] = orjson.loads(reply.data)
        return answer

    async def health(self, script: str, timeout_s: float = 5.0,
                     key: Ed25519PrivateKey | None = None) -> HealthAnswer:
        payload, sig = signed(key or self.key, HealthCheck(WORKER, script, timeout_s))
        reply = await self.bus.request(agent_health(WORKER), payload, timeout=10.0, headers=sig)
        return decode_health_answer(reply.data)

    async def read_reports(self, until: Callable[[list[Report]], bool], timeout: float = 5.0,
                           what: str = "reports") -> list[Report]:
        """Pull reports from the stream until ``until(all reports so far)`` holds."""
        if self._reader is None:
            await self.bus.ensure_pull_consumer(REPORTS_STREAM, "test_reports", reports(WORKER))
            self._reader = await self.bus.pull_subscription(REPORTS_STREAM, "test_reports")
        deadline = time.monotonic() + timeout
        while not until(self.reports):
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.reports}")
            with suppress(TimeoutError):
                for msg in await self._reader.fetch(batch=100, timeout=0.2):
                    self.reports.append(decode_report(msg.data))
                    await msg.ack()
        return self.reports

    async def finished(self, step: ExecStep, timeout: float = 5.0) -> list[Report]:
        """Every report of ``step``'s execution, once its "finished" report is in."""
        def done(rs: list[Report]) -> bool:
            return any(r.kind == "finished" and _same(r, step) for r in rs)

        await self.read_reports(done, timeout, what=f"{step.task_id}/{step.step} to finish")
        return [r for r in self.reports if _same(r, step)]

    async def work_queue_empty(self) -> bool:
        info = await self.bus.jetstream().consumer_info(WORK_STREAM, work_consumer(WORKER))
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def _same(report: Report, step: ExecStep) -> bool:
    return (report.task_id, report.step, report.assignment) == step.key


@asynccontextmanager
async def agent_env(tmp_path: Path, comms_style: str = "listening", capacity: int = 2,
                    port: int = 0, **config: Any) -> AsyncIterator[Env]:
    """Everything a test needs; the agent is stopped on exit (start it with start_agent)."""
    conf = tmp_path / "nats" / "accounts.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(accounts({WORKER: AGENT_PASSWORD}))
    key = new_key()
    async with embedded(tmp_path, port=port) as nats, \
            bus_on(nats.url, "test-server", user=SERVER_USER, password=SERVER_PASSWORD) as bus:
        await bus.ensure_streams()
        await bus.ensure_pull_consumer(WORK_STREAM, work_consumer(WORKER), work(WORKER))
        home = tmp_path / "home"
        save_registration(home, Registration(
            server_url="http://127.0.0.1:1", worker_id=WORKER, name="agent-one",
            comms_style=comms_style, capacity=capacity, nats_urls=(nats.url,),
            nats_user=agent_user(WORKER), nats_password=AGENT_PASSWORD,
            inbox_prefix=inbox_prefix(WORKER), work_consumer=work_consumer(WORKER),
            server_key=public_key_text(key),
        ))
        settings = {"heartbeat_interval": 0.2, "fetch_timeout": 1.0, "report_timeout": 1.0,
                    "retry_initial": 0.05, "retry_max": 0.5, **config}
        agent = build_agent(
            home, bus=NatsBus(reconnect_wait=0.1, connect_timeout=2.0),
            executor=StepExecutor(flush_interval=0.02, kill_grace=0.5),
            config=AgentConfig(work_root=home / "work", **settings),
        )
        env = Env(nats, bus, key, agent, tmp_path)
        try:
            yield env
        finally:
            await asyncio.wait_for(agent.service.stop(grace=2.0), 10.0)


def run(coro: Any) -> Any:
    """asyncio.run, for symmetry with the other tiers."""
    return asyncio.run(coro)
