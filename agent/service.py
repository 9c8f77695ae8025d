"""``AgentService``: an external worker's agent, serving one registration over NATS.

* A *listening* agent takes ``ExecStep`` requests on ``shoal.agent.<id>.exec`` and answers
  at once (accepted, or why not); a *polling* agent pulls them from its durable consumer on
  the work queue, only as many as it has free slots, and acks each once it is checked.
* Every instruction must carry the signature of the server key pinned at registration,
  name this worker, and (for a step) not be expired; anything else is refused and logged
  ("refused instruction: ..."). A step is run at most once per ``ExecStep.key``, however
  often it is delivered.
* Each step runs through the step executor under ``<home>/work``; its reports (started,
  log batches, finished) go out in order, one sender per execution, each retried with the
  same message id until JetStream acknowledges it (so none is lost to a NATS restart, and
  a retry counts once).
* Heartbeats go out every ``heartbeat_interval`` seconds with the number of running steps.
* When NATS keeps refusing the agent's credentials (the server deleted the worker), the
  running steps are killed and ``run_until`` returns ``AgentExit.REVOKED``.

Lifecycle (STYLE.md): ``start()``, ``run_until(stop)``, ``stop(grace)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.execution import Execution, GaveUp, ReportSender
from agent.health import run_health_check
from agent.home import Registration
from agent.leftovers import clean_work_root
from agent.ports import (
    AgentTransport,
    InboundDelivery,
    InboundRequest,
    StepRunner,
)
from domain.messages import (
    CancelStep,
    ExecAnswer,
    ExecStep,
    HealthAnswer,
    HealthCheck,
    Heartbeat,
    ProtocolError,
    decode_instruction,
    encode,
)
from domain.signing import SIGNATURE_HEADER, parse_public_key, verify

log = logging.getLogger("shoal.agent")

AGENT_STOPPED = "agent stopped"
CREDENTIALS_REVOKED = "the agent's credentials were revoked"
COMMS_STYLES = frozenset({"listening", "polling"})

StepKey = tuple[str, str, int]
InstructionT = TypeVar("InstructionT", ExecStep, CancelStep, HealthCheck)


class AgentExit(enum.Enum):
    """Why ``run_until`` returned."""

    STOPPED = "stopped"  # the stop event was set
    REVOKED = "revoked"  # NATS refuses this agent's credentials: the worker is gone


@dataclass(frozen=True)
class AgentSubjects:
    """Where this agent's messages travel (made from ``adapters.nats.subjects``)."""

    exec: str
    cancel: str
    health: str
    reports: str
    heartbeat: str
    work_stream: str
    work_consumer: str


@dataclass(frozen=True)
class AgentConfig:
    """Timings and limits of the agent service.

    ``fetch_timeout``: how long one long-poll on the work queue waits; ``report_timeout``:
    how long one report waits for JetStream's acknowledgement before it is sent again;
    ``retry_initial``/``retry_max``: back-off between report attempts; ``revoked_after``:
    authorization violations in a row that mean the credentials are gone;
    ``max_health_age``: a health check issued longer ago than this is refused (a replay)."""

    work_root: Path
    heartbeat_interval: float = 2.0
    fetch_timeout: float = 5.0
    report_timeout: float = 5.0
    retry_initial: float = 0.1
    retry_max: float = 5.0
    revoked_after: int = 3
    max_health_age: float = 300.0
    log_chunk_bytes: int = 256 * 1024
    remember_keys: int = 10_000
    clock: Callable[[], float] = time.time


class AgentService:
    """Serves one registration: takes signed instructions, runs steps, reports back."""

    def __init__(
        self,
        registration: Registration,
        bus: AgentTransport,
        runner: StepRunner,
        config: AgentConfig,
        subjects: AgentSubjects,
    ) -> None:
        if registration.comms_style not in COMMS_STYLES:
            raise ValueError(f"unknown comms style {registration.comms_style!r}")
        if registration.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {registration.capacity}")
        self.registration = registration
        self._key = parse_public_key(registration.server_key)
        self._bus = bus
        self._runner = runner
        self._config = config
        self._subjects = subjects
        self._running: dict[StepKey, Execution] = {}
        self._seen: OrderedDict[StepKey, None] = OrderedDict()
        self._steps: set[asyncio.Task[None]] = set()
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._accepting = False
        self._slot_free = asyncio.Event()
        self._give_up = asyncio.Event()
        self._sender = ReportSender(
            bus, subjects.reports, self._give_up, timeout=config.report_timeout,
            retry_initial=config.retry_initial, retry_max=config.retry_max,
        )
        self._revoked = asyncio.Event()
        self._violations = 0
        # Registered with; the server's setting from then on (each instruction carries it).
        self._capacity = registration.capacity

    @property
    def running(self) -> int:
        """How many steps run here now."""
        return len(self._running)

    @property
    def capacity(self) -> int:
        """How many steps may run here at once: the capacity the latest instruction
        carried (the worker's setting on the server, which may have changed since this
        agent registered), else the one it registered with."""
        return self._capacity

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"worker_id": self.registration.worker_id, **more}

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect with this agent's own NATS credentials, listen for instructions, and
        start the heartbeats (and, for a polling agent, the work-queue loop). Raises the
        transport's error when NATS cannot be reached."""
        reg = self.registration
        # Steps a crashed earlier run left behind would otherwise keep running unseen.
        await asyncio.to_thread(clean_work_root, self._config.work_root)
        await self._bus.start(
            list(reg.nats_urls), f"shoal-agent-{reg.name}", user=reg.nats_user,
            password=reg.nats_password, inbox_prefix=reg.inbox_prefix,
        )
        self._bus.add_error_listener(self._on_bus_error)
        self._accepting = True
        if reg.comms_style == "listening":
            await self._bus.subscribe(self._subjects.exec, self._on_exec)
        await self._bus.subscribe(self._subjects.cancel, self._on_cancel)
        await self._bus.subscribe(self._subjects.health, self._on_health)
        self._loops["heartbeat"] = asyncio.create_task(self._heartbeats(), name="agent heartbeats")
        if reg.comms_style == "polling":
            self._loops["poll"] = asyncio.create_task(self._poll(), name="agent work queue")
        log.info("agent started", extra=self._fields(
            worker_name=reg.name, comms_style=reg.comms_style, capacity=reg.capacity))

    async def run_until(self, stop: asyncio.Event) -> AgentExit:
        """Serve until ``stop`` is set (STOPPED) or the credentials are revoked (REVOKED).
        Call ``stop()`` afterwards in either case."""
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(self._revoked.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return AgentExit.REVOKED if self._revoked.is_set() else AgentExit.STOPPED

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, cancel the running steps (they report "cancelled", reason
        "agent stopped"), give their reports ``grace`` seconds to get out, then close."""
        poll = self._loops.pop("poll", None)
        if poll is not None:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        self._accepting = False
        for execution in self._running.values():
            execution.reason = execution.reason or AGENT_STOPPED
            execution.cancel.set()
        if self._steps:
            _, pending = await asyncio.wait(set(self._steps), timeout=grace)
            if pending:
                log.warning("steps still reporting at stop; giving up on them",
                            extra=self._fields(steps=len(pending)))
                self._give_up.set()
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        for task in self._loops.values():
            task.cancel()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        self._loops.clear()
        if self._bus.is_connected:
            with contextlib.suppress(Exception):
                await self._bus.flush(timeout=min(2.0, max(grace, 0.1)))
        try:
            await self._bus.stop(grace=min(5.0, max(grace, 0.1)))
        except Exception as exc:  # e.g. nats-py closing a socket the server already reset
            log.warning("nats connection did not close cleanly", extra=self._fields(error=repr(exc)))
        log.info("agent stopped", extra=self._fields())

    # -- instructions ---------------------------------------------------------------

    def _admit(self, data: bytes, headers: dict[str, str] | None, expected: type[InstructionT], subject: str
               ) -> InstructionT | str:
        """The instruction in a message, or why it is refused (logged here)."""
        reason = self._refusal(data, headers, expected)
        if isinstance(reason, str):
            log.warning("refused instruction: %s", reason, extra=self._fields(subject=subject, reason=reason))
        return reason

    def _refusal(
        self, data: bytes, headers: dict[str, str] | None, expected: type[InstructionT]
    ) -> InstructionT | str:
        signature = (headers or {}).get(SIGNATURE_HEADER)
        if not signature:
            return "it is not signed"
        if not verify(self._key, data, signature):
            return "its signature does not match the server key pinned at registration"
        try:
            instruction = decode_instruction(data)
        except ProtocolError as exc:
            return f"it is malformed: {exc}"
        if not isinstance(instruction, expected):
            return f"a {instruction.kind!r} instruction arrived where {expected.__name__} was expected"
        if instruction.worker_id != self.registration.worker_id:
            return f"it is addressed to worker {instruction.worker_id!r}, not to this one"
        now = self._config.clock()
        if isinstance(instruction, ExecStep) and instruction.expires_at <= now:
            return f"it expired {now - instruction.expires_at:.0f}s ago"
        if isinstance(instruction, HealthCheck) and now - instruction.issued_at > self._config.max_health_age:
            return f"it was issued {now - instruction.issued_at:.0f}s ago (a replay?)"
        return instruction

    def _take(self, step: ExecStep) -> ExecAnswer:
        """Start ``step`` unless it ran here already or there is no room."""
        extra = self._fields(task_id=step.task_id, step=step.step, assignment=step.assignment)
        if step.key in self._seen:
            log.info("duplicate instruction ignored", extra=extra)
            return ExecAnswer(True, "already accepted")
        if not self._accepting:
            return ExecAnswer(False, "the agent is stopping")
        if step.capacity is not None and step.capacity != self._capacity:
            log.info("capacity changed on the server",
                     extra={**extra, "capacity": step.capacity, "was": self._capacity})
            self._capacity = step.capacity
            self._slot_free.set()  # a polling agent may fetch more now
        if len(self._running) >= self._capacity:
            log.info("instruction refused: at capacity", extra=extra)
            return ExecAnswer(False, "at capacity")
        self._seen[step.key] = None
        while len(self._seen) > self._config.remember_keys:
            self._seen.popitem(last=False)
        execution = Execution(step, self.registration.worker_id, self._sender)
        self._running[step.key] = execution
        task = asyncio.create_task(self._execute(execution), name=f"step {step.task_id}/{step.step}")
        self._steps.add(task)
        task.add_done_callback(self._steps.discard)
        log.info("step accepted", extra=extra)
        return ExecAnswer(True)

    async def _on_exec(self, msg: InboundRequest) -> None:
        found = self._admit(msg.data, msg.headers, ExecStep, self._subjects.exec)
        answer = ExecAnswer(False, f"refused: {found}") if isinstance(found, str) else self._take(found)
        await msg.respond(encode(answer))

    async def _on_work(self, msg: InboundDelivery) -> None:
        found = self._admit(msg.data, msg.headers, ExecStep, self._subjects.work_consumer)
        if not isinstance(found, str):
            answer = self._take(found)
            if not answer.accepted:  # stopping, or full: leave it for a redelivery
                log.info("instruction left in the queue", extra=self._fields(reason=answer.reason))
                return
        try:
            await msg.ack()
        except Exception as exc:  # the step runs regardless; a redelivery is a duplicate
            log.warning("work queue ack failed", extra=self._fields(error=repr(exc)))

    async def _on_cancel(self, msg: InboundRequest) -> None:
        found = self._admit(msg.data, msg.headers, CancelStep, self._subjects.cancel)
        if isinstance(found, str):
            await msg.respond(json.dumps({"ok": False, "error": f"refused: {found}"}).encode())
            return
        execution = self._running.get((found.task_id, found.step, found.assignment))
        if execution is not None:
            execution.reason = execution.reason or "cancelled"
            execution.cancel.set()
        log.info("cancel requested", extra=self._fields(
            task_id=found.task_id, step=found.step, assignment=found.assignment,
            running=execution is not None))
        await msg.respond(json.dumps({"ok": execution is not None}).encode())

    async def _on_health(self, msg: InboundRequest) -> None:
        found = self._admit(msg.data, msg.headers, HealthCheck, self._subjects.health)
        if isinstance(found, str):
            await msg.respond(encode(HealthAnswer("unhealthy", f"refused instruction: {found}")))
            return
        answer = await run_health_check(self._runner, found, self._config.work_root, self._worker_env())
        log.info("health check run", extra=self._fields(status=answer.status))
        await msg.respond(encode(answer))

    def _worker_env(self) -> dict[str, str]:
        return {"SHOAL_WORKER_ID": self.registration.worker_id, "SHOAL_WORKER_NAME": self.registration.name}

    # -- loops ----------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        subject = self._subjects.heartbeat
        while True:
            if self._bus.is_connected:
                self._violations = 0  # connected again: earlier refusals were not a revocation
            try:
                await self._bus.publish(subject, encode(Heartbeat(self.registration.worker_id, self.running)))
            except Exception as exc:
                log.debug("heartbeat not sent", extra=self._fields(error=repr(exc)))
            await asyncio.sleep(self._config.heartbeat_interval)

    async def _poll(self) -> None:
        """Long-poll the work queue for as many instructions as there are free slots."""
        cfg = self._config
        subscription = None
        failures = 0
        while True:
            free = self._capacity - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                if subscription is None:
                    subscription = await self._bus.pull_subscription(
                        self._subjects.work_stream, self._subjects.work_consumer)
                messages = await subscription.fetch(batch=free, timeout=cfg.fetch_timeout)
            except TimeoutError:
                continue  # nothing for us: ask again
            except Exception as exc:  # disconnected, consumer missing, ...: try again later
                failures += 1
                level = logging.WARNING if failures in (1, 10) else logging.DEBUG
                log.log(level, "work queue fetch failed", extra=self._fields(error=repr(exc)))
                await asyncio.sleep(min(cfg.retry_max, cfg.retry_initial * 2 ** min(failures, 6)))
                continue
            failures = 0
            for msg in messages:
                await self._on_work(msg)

    # -- running a step -------------------------------------------------------------

    async def _execute(self, execution: Execution) -> None:
        step = execution.step
        extra = self._fields(task_id=step.task_id, step=step.step, assignment=step.assignment)
        env = {"SHOAL_TASK_ID": step.task_id, "SHOAL_STEP_NAME": step.step, **self._worker_env(), **step.env}
        try:
            result = await execution.run(self._runner, env, self._config.work_root,
                                         self._config.log_chunk_bytes)
            if result is not None:
                log.info("step finished", extra={
                    **extra, "outcome": result.outcome, "exit_code": result.exit_code})
        except GaveUp:
            log.warning("step reports abandoned", extra=extra)
        except Exception as exc:
            log.exception("step failed inside the agent", extra=extra)
            with contextlib.suppress(GaveUp):
                await execution.report("finished", outcome="failed", reason=f"agent error: {exc!r}")
        finally:
            self._running.pop(step.key, None)
            self._slot_free.set()

    # -- revocation -----------------------------------------------------------------

    def _on_bus_error(self, exc: Exception) -> None:
        """Counts NATS refusing our credentials; enough in a row mean revocation."""
        text = str(exc).lower()
        if "authorization violation" not in text and type(exc).__name__ != "AuthorizationError":
            return
        self._violations += 1
        if self._violations < self._config.revoked_after or self._revoked.is_set():
            return
        log.error("credentials revoked; stopping", extra=self._fields(error=str(exc)))
        self._revoked.set()
        self._accepting = False
        self._give_up.set()  # reports can no longer get out
        for execution in self._running.values():
            execution.reason = execution.reason or CREDENTIALS_REVOKED
            execution.cancel.set()

