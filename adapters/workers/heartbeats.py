"""Heartbeats: which agents are alive, and what happens to the steps of one that is not.

Heartbeats themselves are never events; only the transitions are (CameOnline on the first
heartbeat after silence, WentOffline after ``timeout_s`` without one). When a worker is
lost, its running steps fail with "worker lost" and its assigned-but-not-started steps go
back to waiting so another worker takes them; a polling worker whose policy says it may be
offline keeps its queued steps (they run when it returns). A server that just started
gives every agent ``timeout_s`` to be heard from before judging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from nats.aio.msg import Msg

from adapters.nats import subjects
from adapters.nats.bus import NatsBus
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import Conflict, InvalidTransition, NotFound
from domain.messages import ProtocolError, decode_heartbeat
from domain.plan import StepState
from domain.policies import Connectivity
from domain.tasks import Task
from domain.workers import CommsStyle, HealthStatus
from projections.membership import assignments
from projections.sql import Database
from projections.workers import agent_workers

log = logging.getLogger("shoal.workers")

WORKER_LOST = "worker lost"


class HeartbeatMonitor:
    """start() / stop(); ``on_changed(task_id)`` after a lost worker's step changed."""

    def __init__(
        self, app: Shoal, views: Database, bus: NatsBus, actor: Actor,
        on_changed: Callable[[UUID], None], *, timeout_s: float = 6.0, check_every_s: float = 1.0,
    ) -> None:
        self.app = app
        self.views = views
        self.bus = bus
        self.actor = actor
        self.on_changed = on_changed
        self.timeout_s = timeout_s
        self.check_every_s = check_every_s
        self.last_seen: dict[str, float] = {}
        self._heard_at: dict[str, str] = {}  # wall clock, ISO, for the API
        self._heard: set[str] = set()  # online as far as this run of the server knows
        self._started_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for heartbeats and start judging."""
        self._started_at = time.monotonic()
        await self.bus.subscribe(subjects.HEARTBEAT_SUBJECTS, self._on_heartbeat)
        self._task = asyncio.create_task(self._watch(), name="shoal-heartbeat-monitor")

    async def stop(self) -> None:
        """Stop judging (the subscription ends with the bus)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def seen(self, worker_id: str) -> float | None:
        """Monotonic time of the worker's last heartbeat in this run, if any."""
        return self.last_seen.get(worker_id)

    def heard_at(self) -> dict[str, str]:
        """worker id -> when its last heartbeat arrived (ISO time, UTC), this run."""
        return dict(self._heard_at)

    def is_alive(self, worker_id: str) -> bool:
        """Heard from within the timeout."""
        seen = self.last_seen.get(worker_id)
        return seen is not None and time.monotonic() - seen <= self.timeout_s

    async def _on_heartbeat(self, msg: Msg) -> None:
        sender = msg.subject.rsplit(".", 1)[-1]
        try:
            beat = decode_heartbeat(msg.data)
            if beat.worker_id != sender:
                raise ProtocolError(f"sent on {sender}'s subject but names {beat.worker_id}")
            worker_id = UUID(sender)
        except (ProtocolError, ValueError) as exc:
            log.warning("heartbeat refused", extra={"worker_id": sender, "reason": str(exc)})
            return
        self.last_seen[sender] = time.monotonic()
        self._heard_at[sender] = datetime.now(UTC).isoformat()
        if sender in self._heard:
            return
        self._heard.add(sender)
        try:
            position = await asyncio.to_thread(self.app.record_worker_online, worker_id, actor=self.actor)
        except NotFound:
            log.warning("heartbeat from an unknown worker", extra={"worker_id": sender})
            return
        except Conflict:
            # Its steps were recording it offline at the same moment: the next heartbeat
            # (a couple of seconds away) records it online, rather than it staying offline.
            self._heard.discard(sender)
            log.info("worker online not recorded yet (a concurrent change); next heartbeat",
                     extra={"worker_id": sender})
            return
        if position is not None:
            log.info("worker came online", extra={"worker_id": sender})

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat check failed; retrying")

    def _silent_for(self, worker_id: str, now: float) -> float:
        return now - self.last_seen.get(worker_id, self._started_at)

    async def check(self) -> None:
        """Record workers that fell silent, and deal with the steps of lost workers."""
        now = time.monotonic()
        workers = await asyncio.to_thread(agent_workers, self.views)
        known = {w["id"]: w for w in workers}
        for w in workers:
            silent = self._silent_for(w["id"], now)
            if silent <= self.timeout_s:
                continue
            if w["id"] in self._heard or w["health_status"] != HealthStatus.UNAVAILABLE.value:
                self._heard.discard(w["id"])
                detail = f"no heartbeat for {silent:.0f}s"
                try:
                    await asyncio.to_thread(
                        self.app.record_worker_offline, UUID(w["id"]), detail, actor=self.actor
                    )
                except NotFound:
                    continue
                except Conflict:
                    continue  # written meanwhile (its steps saw it too): the next check settles it
                log.warning("worker went offline", extra={"worker_id": w["id"], "detail": detail})
        for task_id, step, worker_id in await asyncio.to_thread(assignments, self.views):
            if self._silent_for(worker_id, now) <= self.timeout_s:
                continue
            worker = known.get(worker_id)
            keep_queued = worker is not None and await asyncio.to_thread(self._may_be_offline, worker)
            name = worker["name"] if worker else worker_id
            silent = self._silent_for(worker_id, now)
            reason = (f"{WORKER_LOST}: no heartbeat from {name!r} for {silent:.0f}s" if worker
                      else f"{WORKER_LOST}: worker {worker_id} was deregistered")
            if await asyncio.to_thread(self._lose, UUID(task_id), step, UUID(worker_id), reason, keep_queued):
                self.on_changed(UUID(task_id))

    def _may_be_offline(self, worker: dict[str, object]) -> bool:
        if worker["comms_style"] != CommsStyle.POLLING.value:
            return False
        try:
            policy = self.app.get_policy(UUID(str(worker["machine_policy_id"])))
        except NotFound:
            return False
        return policy.connectivity is Connectivity.MAY_BE_OFFLINE

    def _lose(self, task_id: UUID, step: str, worker_id: UUID, reason: str, keep_queued: bool) -> bool:
        """Fail or requeue one step of a lost worker; True when the task changed."""
        actor = self.actor
        changed = False

        def change(task: Task) -> None:
            nonlocal changed
            changed = False  # a retried change starts over
            run = task.runs.get(step)
            if run is None or run.worker_id != worker_id or run.state.is_final:
                return
            if run.state is StepState.RUNNING:
                task.finish_step(step, StepState.FAILED, None, reason, actor)
                task.finish_if_done(actor)
                changed = True
            elif run.state is StepState.ASSIGNED and not keep_queued:
                task.requeue(step, f"{reason}; the step had not started, so it waits for another worker",
                             actor)
                changed = True

        try:
            self.app.update_task(task_id, change)
        except (NotFound, InvalidTransition):
            return False
        if changed:
            log.warning("step of a lost worker", extra={"task_id": str(task_id), "step": step,
                                                        "reason": reason})
        return changed
