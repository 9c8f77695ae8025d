"""Where a step runs: the rule from the product, as one pure function.

1. A step resolves to a pool: the one it names always wins; else, for an execution on
   behalf of a target that has a default worker pool, the target's pool; else the
   default pool.
2. Default pool, no workers in it at all (unhealthy or disabled ones still count), and
   the built-in worker enabled -> the built-in worker. A target's pool counts as the
   default pool only when it *is* the default pool (same id); any other target pool is
   treated like a pool the step named.
3. Otherwise a worker of that pool that is enabled, online (its agent is connected), not
   unhealthy or unavailable, and has free capacity; the least busy, ties taken in turn.
   None -> the step waits.

It never falls back to the server for a pool that has workers, nor for a non-default
pool (named by the step or by the target): that is what lets one worker in the default
pool stop user code running on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.workers import HealthStatus

BUILT_IN_WORKER_NAME = "built-in worker"

# New workers are `unknown` until their first health check; they may take steps.
ROUTABLE = frozenset({HealthStatus.HEALTHY, HealthStatus.HAS_WARNINGS, HealthStatus.UNKNOWN})


@dataclass(frozen=True)
class Candidate:
    """A member of the resolved pool, as routing sees it."""

    worker_id: UUID
    name: str
    health: HealthStatus
    is_disabled: bool
    capacity: int
    running: int
    # An agent's worker is online while it heartbeats; one registered whose agent never
    # connected is not, and gets no steps (they would only wait in its queue).
    online: bool = True

    @property
    def can_take(self) -> bool:
        """Enabled, online, healthy enough and with a free slot."""
        return (
            not self.is_disabled and self.online and self.health in ROUTABLE
            and self.running < self.capacity
        )


@dataclass(frozen=True)
class RunOnBuiltIn:
    """Run on the server's built-in worker."""

    pool_id: UUID


@dataclass(frozen=True)
class RunOnWorker:
    """Run on this worker, which may run ``capacity`` steps at once (its setting now)."""

    pool_id: UUID
    worker_id: UUID
    worker_name: str
    capacity: int


@dataclass(frozen=True)
class Wait:
    """Nothing can take the step now; try again when workers change."""

    pool_id: UUID
    reason: str


@dataclass(frozen=True)
class Refuse:
    """The step can never run as things are configured; fail it with the reason."""

    pool_id: UUID
    reason: str


Route = RunOnBuiltIn | RunOnWorker | Wait | Refuse


def resolve_pool(
    step_pool_id: UUID | None, default_pool_id: UUID, target_pool_id: UUID | None = None
) -> UUID:
    """The pool a step runs in: the one it names, else the default worker pool of the
    target it runs on behalf of (``target_pool_id``, None when there is no target or it
    has no pool), else the default pool."""
    if step_pool_id is not None:
        return step_pool_id
    if target_pool_id is not None:
        return target_pool_id
    return default_pool_id


def route(
    *,
    step_pool_id: UUID | None,
    default_pool_id: UUID,
    pool_name: str,
    members: tuple[Candidate, ...],
    built_in_enabled: bool,
    turn: int = 0,
    target_pool_id: UUID | None = None,
) -> Route:
    """Decide where one step runs. ``members`` are every worker of the resolved pool (see
    resolve_pool) and ``pool_name`` its name; ``turn`` rotates among equally busy workers
    (pass a counter that moves on). ``target_pool_id`` is the default worker pool of the
    target the execution is on behalf of, if any: used only when the step names no pool.
    Only the default pool itself can fall back to the built-in worker, so an empty target
    pool other than the default makes the step wait."""
    pool_id = resolve_pool(step_pool_id, default_pool_id, target_pool_id)
    if pool_id == default_pool_id and not members:
        if built_in_enabled:
            return RunOnBuiltIn(pool_id)
        return Refuse(
            pool_id,
            f"the built-in worker is disabled and the default pool {pool_name!r} has no "
            "workers: add a worker to that pool, or enable the built-in worker",
        )
    if not members:
        return Wait(pool_id, f"waiting for a worker: pool {pool_name!r} has no workers")
    able = [m for m in members if m.can_take]
    if not able:
        return Wait(pool_id, f"waiting for a worker in pool {pool_name!r}: {_why_none(members)}")
    least = min(m.running for m in able)
    tied = sorted((m for m in able if m.running == least), key=lambda m: m.worker_id)
    chosen = tied[turn % len(tied)]
    return RunOnWorker(pool_id, chosen.worker_id, chosen.name, chosen.capacity)


def _why_none(members: tuple[Candidate, ...]) -> str:
    disabled = sum(m.is_disabled for m in members)
    unwell = sum(not m.is_disabled and m.health not in ROUTABLE for m in members)
    offline = sum(not m.is_disabled and m.health in ROUTABLE and not m.online for m in members)
    busy = len(members) - disabled - unwell - offline
    parts = [f"{n} {what}" for n, what in ((disabled, "disabled"), (unwell, "unhealthy or "
             "unavailable"), (offline, "offline"), (busy, "at capacity")) if n]
    return ", ".join(parts)
