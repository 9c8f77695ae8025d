"""Where a task run's script step goes now: the routing rule (domain/routing.py) fed
with the pool's members as this node sees them."""

from __future__ import annotations

import time
from uuid import UUID

from adapters.dispatch.execution import Execution
from adapters.workers.hub import WorkerHub
from domain.app import Shoal
from domain.errors import NotFound
from domain.routing import Candidate, Refuse, Route, resolve_pool, route
from domain.workers import HealthStatus
from projections.membership import members_of
from projections.sql import Database

# How long a worker that refused a step of a task is passed over for that task's steps.
REFUSAL_MEMORY_S = 30.0


class StepRouter:
    """Routing decisions for one task run. ``refused`` (worker -> when, monotonic) holds
    the workers that answered "no" to a step of this run (e.g. a signature they could
    not verify): passed over for a while rather than asked again at once."""

    def __init__(
        self, app: Shoal, views: Database, hub: WorkerHub, refused: dict[UUID, float]
    ) -> None:
        self.app = app
        self.views = views
        self.hub = hub
        self.refused = refused

    def decide(self, execution: Execution, turn: int) -> tuple[Route, str, str | None]:
        """Where the execution would run now, by the routing rule (in a worker thread:
        it reads the store and the read model). Returns (decision, pool name, run-as
        user)."""
        app = self.app
        step_pool_id, target_pool_id = execution.step.worker_pool_id, execution.target_pool_id
        default_pool_id = app.default_pool_id()
        try:
            pool = app.get_pool(resolve_pool(step_pool_id, default_pool_id, target_pool_id))
        except NotFound:
            # A target's pool is kept as it was when the step started; it may be gone.
            return Refuse(target_pool_id or default_pool_id, "the target's default worker "
                          f"pool {target_pool_id} no longer exists"), "", None
        config = app.configuration()
        decision = route(
            step_pool_id=step_pool_id, default_pool_id=default_pool_id,
            pool_name=pool.name, members=self._candidates(pool.id),
            built_in_enabled=config.built_in_enabled, turn=turn, target_pool_id=target_pool_id,
        )
        return decision, pool.name, config.run_as_user

    def _candidates(self, pool_id: UUID) -> tuple[Candidate, ...]:
        rows = members_of(self.views, str(pool_id))
        load = self.hub.load
        now = time.monotonic()
        passed_over = {w for w, at in self.refused.items() if now - at < REFUSAL_MEMORY_S}
        return tuple(
            Candidate(
                worker_id=UUID(r["worker_id"]), name=r["worker_name"],
                health=HealthStatus(r["health_status"]), is_disabled=r["is_disabled"],
                # The read model trails this node's own latest assignments.
                capacity=r["capacity"], running=max(r["running"], load.get(r["worker_id"], 0)),
                # One that refused is counted as offline: it still counts as a member
                # (so the pool is not "empty"), it just gets no step for a while.
                online=r["online"] and UUID(r["worker_id"]) not in passed_over,
            )
            for r in rows
        )
