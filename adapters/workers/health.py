"""Machine-policy health checks: the policy's bash health script runs on each worker, on
demand (``check_now``) and every ``health_check_interval_s``; the verdict is recorded as
Worker.HealthChecked. Workers the policy says to clean up are deleted once they have been
unavailable for longer than ``cleanup_after_s``.

Outcomes. An answer is recorded as it came (healthy / has_warnings / unhealthy). A worker
that does not answer (no responders, no reply in time, an answer that cannot be read) is
recorded ``unavailable`` with the reason as detail, unless its policy says it **may be
offline**: then nothing is recorded and its status stays as it was (Octopus's "health
checks will not fail if machines are unavailable"; the heartbeat monitor, not the health
check, says whether an agent is online), and it is never made unhealthy for it. The
caller still learns that the check did not get through (``recorded`` is False).

Scheduling (periodic checks, in this server run only: a restarted server starts over).
A worker is first checked soon after its agent is seen online (heartbeats): after
``first_check_after_s`` plus a share of ``first_check_spread_s`` taken from its id, so a
thousand agents reconnecting after a server restart are checked over that window rather
than in the same instant. The same happens each time an agent comes back online (its
status was reset to unknown). A worker never seen online is first checked one interval
(plus its share) after it was first listed. After a check, the next one is due
``health_check_interval_s`` after it ended (the policy is read each round, so a changed
interval applies at once). Due checks start together, as tasks, bounded only by
``concurrency`` (256 by default), so one slow worker never delays the others. Disabled
workers are not checked periodically (on demand they are).

Clean-up counts from the moment this server run first saw the worker unavailable, so after
a restart a worker is never deleted early, only up to one server uptime late.

Comms styles are pluggable: ``runners`` maps a CommsStyle to a HealthRunner. Agents
(listening, polling) answer ``shoal.agent.<id>.health`` through the WorkerGateway; SSH
workers run the script over their connection (adapters/workers/ssh.py). A style without a
runner is refused by check_now with InvalidTransition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from adapters.workers.gateway import WorkerGateway, WorkerUnavailable
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import InvalidTransition, NotFound
from domain.messages import HealthAnswer, HealthCheck
from domain.policies import CleanUp, Connectivity, PolicySettings
from domain.workers import CommsStyle, HealthStatus
from projections.policies import get_policy
from projections.sql import Database
from projections.watch import PositionWatch
from projections.workers import checked_workers

log = logging.getLogger("shoal.workers")

# How soon a worker that heartbeats, but did not answer its last check, is checked again.
RECHECK_UNAVAILABLE_S = 30.0

SCRIPT_TIMEOUT_S = 60.0  # how long the health script may run on the worker
ANSWER_MARGIN_S = 10.0  # on top of that, for the round trip, before giving up
MAX_DETAIL_CHARS = 2000  # the tail of what the script printed is kept
STYLE_NAMES = {CommsStyle.SSH: "SSH"}
ANSWERED = frozenset({HealthStatus.HEALTHY, HealthStatus.HAS_WARNINGS, HealthStatus.UNHEALTHY})


@dataclass(frozen=True)
class HealthTarget:
    """What a runner needs to know about the worker it checks."""

    worker_id: str
    name: str
    comms_style: CommsStyle
    endpoint: str | None
    is_disabled: bool


class HealthRunner(Protocol):
    """Runs a health script on one worker; raises WorkerUnavailable when it cannot."""

    async def __call__(self, target: HealthTarget, script: str, timeout_s: float) -> HealthAnswer:
        """The script's verdict."""
        ...


class AgentHealthRunner:
    """Listening and polling agents: a signed request on ``shoal.agent.<id>.health``."""

    def __init__(self, gateway: WorkerGateway) -> None:
        self.gateway = gateway

    async def __call__(self, target: HealthTarget, script: str, timeout_s: float) -> HealthAnswer:
        """Ask the agent to run ``script``."""
        return await self.gateway.health(HealthCheck(target.worker_id, script, timeout_s))


@dataclass(frozen=True)
class HealthResult:
    """One check's outcome. ``recorded``: a HealthChecked event was written (at
    ``position``); False when a may-be-offline worker did not answer."""

    worker_id: UUID
    status: HealthStatus
    detail: str
    checked_at: datetime
    recorded: bool
    position: int | None


def _verdict(answer: HealthAnswer) -> tuple[HealthStatus, str]:
    detail = answer.detail[-MAX_DETAIL_CHARS:]
    try:
        status = HealthStatus(answer.status)
    except ValueError:
        status = HealthStatus.UNKNOWN
    if status not in ANSWERED:
        return HealthStatus.UNHEALTHY, f"the worker answered an unknown health status {answer.status!r}"
    return status, detail


class HealthChecker:
    """start() / stop(grace); ``check_now(worker_id)``; ``tick()`` is one scheduling round
    (the loop calls it every ``tick_s``; tests call it directly, then ``settle()``)."""

    def __init__(
        self, app: Shoal, views: Database, watch: PositionWatch, runners: Mapping[CommsStyle, HealthRunner],
        actor: Actor, revoke: Callable[[UUID], Awaitable[None]], *,
        is_alive: Callable[[str], bool] = lambda _worker_id: False,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 1.0, concurrency: int = 256,
        script_timeout_s: float = SCRIPT_TIMEOUT_S, answer_timeout_s: float | None = None,
        first_check_after_s: float = 2.0, first_check_spread_s: float = 10.0,
    ) -> None:
        self.app = app
        self.views = views
        self.watch = watch
        self.runners = dict(runners)
        self.actor = actor
        self.revoke = revoke
        self.is_alive = is_alive
        self.clock = clock
        self.tick_s = tick_s
        self.script_timeout_s = script_timeout_s
        self.answer_timeout_s = answer_timeout_s or script_timeout_s + ANSWER_MARGIN_S
        self.first_check_after_s = first_check_after_s
        self.first_check_spread_s = first_check_spread_s
        self._slots = asyncio.Semaphore(concurrency)
        self._last: dict[str, float] = {}  # when the last check ended (or a stand-in)
        self._soon: dict[str, float] = {}  # an earlier due time: the agent just came online
        self._alive: set[str] = set()  # alive at the last round
        self._unavailable_since: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic rounds."""
        self._loop = asyncio.create_task(self._rounds(), name="shoal-health-checks")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop scheduling, give running checks ``grace`` seconds, cancel the rest."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        running = list(self._running.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel("the server is stopping")
            await asyncio.gather(*pending, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for every check and clean-up started so far."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health-check round failed; retrying")

    # -- on demand -------------------------------------------------------------------

    async def check_now(self, worker_id: UUID, actor: Actor | None = None) -> HealthResult:
        """Run the worker's health check now and record its outcome (see the module
        docstring). NotFound for an unknown worker; InvalidTransition for a comms style
        without a runner."""
        target, policy = await asyncio.to_thread(self._load, worker_id)
        result = await self._check(target, policy, actor or self.actor, periodic=False)
        self._last[target.worker_id] = self.clock()  # the periodic check starts over
        self._soon.pop(target.worker_id, None)
        return result

    def _load(self, worker_id: UUID) -> tuple[HealthTarget, PolicySettings]:
        worker = self.app.get_worker(worker_id)
        policy = self.app.get_policy(worker.machine_policy_id)
        target = HealthTarget(str(worker.id), worker.name, worker.comms_style, worker.endpoint,
                              worker.is_disabled)
        return target, policy.settings

    async def _check(
        self, target: HealthTarget, policy: PolicySettings, actor: Actor, periodic: bool
    ) -> HealthResult:
        runner = self.runners.get(target.comms_style)
        if runner is None:
            style = STYLE_NAMES.get(target.comms_style, target.comms_style.value)
            raise InvalidTransition(f"health checks of {style} workers are not supported yet")
        worker_id = UUID(target.worker_id)
        try:
            async with asyncio.timeout(self.answer_timeout_s):
                answer = await runner(target, policy.health_check_script, self.script_timeout_s)
            status, detail = _verdict(answer)
        except (WorkerUnavailable, TimeoutError) as exc:
            why = (str(exc) if isinstance(exc, WorkerUnavailable)
                   else f"the worker did not answer the health check within {self.answer_timeout_s:g}s")
            if policy.connectivity is Connectivity.MAY_BE_OFFLINE:
                detail = f"{why}; its machine policy says it may be offline, so its health was left as it was"
                log.info("health check not answered; worker may be offline", extra={
                    "worker_id": target.worker_id, "worker": target.name, "detail": why,
                    "periodic": periodic,
                })
                return HealthResult(worker_id, HealthStatus.UNAVAILABLE, detail, datetime.now(UTC),
                                    recorded=False, position=None)
            status, detail = HealthStatus.UNAVAILABLE, why
        position = await asyncio.to_thread(self.app.record_health, worker_id, status, detail, actor=actor)
        fine = status in (HealthStatus.HEALTHY, HealthStatus.HAS_WARNINGS)
        level = logging.INFO if fine else logging.WARNING
        log.log(level, "health checked", extra={
            "worker_id": target.worker_id, "worker": target.name, "status": status.value,
            "detail": detail, "periodic": periodic,
        })
        return HealthResult(worker_id, status, detail, datetime.now(UTC), recorded=True, position=position)

    # -- periodic --------------------------------------------------------------------

    def _share(self, worker_id: str) -> float:
        """This worker's stagger: a fixed fraction of the spread, from its id."""
        try:
            fraction = (UUID(worker_id).int % 10_007) / 10_007
        except ValueError:
            fraction = 0.0
        return self.first_check_after_s + fraction * self.first_check_spread_s

    def _policies(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for policy_id in ids:
            row = get_policy(self.views, policy_id)
            if row is not None:
                found[policy_id] = row
        return found

    async def tick(self) -> None:
        """One round: start the checks that are due and the clean-ups that are owed."""
        workers = await asyncio.to_thread(checked_workers, self.views)
        policies = await asyncio.to_thread(self._policies, {w["machine_policy_id"] for w in workers})
        now = self.clock()
        listed = set()
        for w in workers:
            wid: str = w["id"]
            listed.add(wid)
            policy = policies.get(w["machine_policy_id"])
            if policy is None:  # the read model is catching up
                continue
            # An SSH worker has no agent to heartbeat: as far as scheduling goes it is
            # always there (so an unreachable one is looked at again soon), but for the
            # clean-up it is gone while unavailable.
            ssh = w["comms_style"] == CommsStyle.SSH.value
            unavailable = w["health_status"] == HealthStatus.UNAVAILABLE.value
            alive = self.is_alive(wid) or ssh
            self._observe(wid, alive, unavailable, now)
            if wid in self._running:
                continue
            due = min(self._soon.get(wid, float("inf")),
                      self._last[wid] + float(policy["health_check_interval_s"]))
            if self._owes_cleanup(wid, policy, alive and not (ssh and unavailable), now):
                self._spawn(wid, self._clean_up)
            elif now >= due and CommsStyle(w["comms_style"]) in self.runners:
                self._spawn(wid, self._periodic)
        for gone in set(self._last) - listed:  # deregistered
            for state in (self._last, self._soon, self._unavailable_since):
                state.pop(gone, None)
            self._alive.discard(gone)

    def _observe(self, wid: str, alive: bool, unavailable: bool, now: float) -> None:
        """Note what this round saw of one worker."""
        if wid not in self._last:  # first listed: as if checked, due one interval on
            self._last[wid] = now + self._share(wid)
        if alive and wid not in self._alive:  # came online: check soon
            self._soon[wid] = now + self._share(wid)
        if alive and unavailable and wid not in self._soon:
            # It heartbeats but missed a check: look again soon rather than leave it out
            # of routing for a whole interval.
            self._soon[wid] = max(now, self._last[wid] + RECHECK_UNAVAILABLE_S)
        if alive:
            self._alive.add(wid)
        else:
            self._alive.discard(wid)
        if unavailable:
            self._unavailable_since.setdefault(wid, now)
        else:
            self._unavailable_since.pop(wid, None)

    def _owes_cleanup(self, wid: str, policy: dict[str, Any], alive: bool, now: float) -> bool:
        since = self._unavailable_since.get(wid)
        after = policy["cleanup_after_s"]
        return (policy["cleanup"] == CleanUp.DELETE_UNAVAILABLE.value and since is not None
                and after is not None and not alive and now - since > float(after))

    def _spawn(self, wid: str, work: Callable[[str], Awaitable[None]]) -> None:
        async def bounded() -> None:
            async with self._slots:
                await work(wid)

        task = asyncio.create_task(bounded(), name=f"shoal-health-{wid}")
        self._running[wid] = task
        task.add_done_callback(lambda _t: self._running.pop(wid, None))

    async def _periodic(self, wid: str) -> None:
        try:
            target, policy = await asyncio.to_thread(self._load, UUID(wid))
            if not target.is_disabled:
                await self._check(target, policy, self.actor, periodic=True)
        except (NotFound, InvalidTransition):
            pass  # deregistered meanwhile, or a style without a runner
        except Exception:
            log.exception("health check failed", extra={"worker_id": wid})
        finally:
            self._last[wid] = self.clock()
            self._soon.pop(wid, None)

    def _delete_if_unavailable(self, worker_id: UUID) -> int | None:
        worker = self.app.get_worker(worker_id)
        if worker.health_status is not HealthStatus.UNAVAILABLE:
            return None
        return self.app.deregister_worker(worker_id, actor=self.actor)

    async def _clean_up(self, wid: str) -> None:
        since = self._unavailable_since.get(wid, self.clock())
        try:
            position = await asyncio.to_thread(self._delete_if_unavailable, UUID(wid))
        except NotFound:
            return
        except Exception:
            log.exception("clean-up of an unavailable worker failed", extra={"worker_id": wid})
            return
        if position is None:
            self._unavailable_since.pop(wid, None)
            return
        log.warning("unavailable worker deleted by its machine policy's clean-up", extra={
            "worker_id": wid, "unavailable_for_s": round(self.clock() - since),
        })
        await self.watch.wait_async(position, 5.0)
        await self.revoke(UUID(wid))
