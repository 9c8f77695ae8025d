"""A script step run on behalf of roles: one execution per enabled target in the run's
environment that has any of the roles, at most ``max_parallelism`` at a time, each
routed on its own (a target's default worker pool counts when the step names none).
The step ends when its executions have, failed if any of them failed."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from adapters.dispatch.execution import Execution
from domain.errors import InvalidTransition
from domain.executions import (
    TargetCandidate,
    TargetExecution,
    executions_outcome,
    no_targets_reason,
    plan_executions,
    targets_for,
)
from domain.plan import StepState
from domain.process import DEFAULT_MAX_PARALLELISM, Step
from projections.sql import Database
from projections.targets import targets_in_environment

if TYPE_CHECKING:
    from adapters.dispatch.taskrun import TaskRun

log = logging.getLogger("shoal.dispatch")


def _targets(views: Database, environment_id: UUID) -> list[TargetCandidate]:
    return [
        TargetCandidate(
            target_id=UUID(row["id"]), name=row["name"], roles=tuple(row["roles"]),
            environment_ids=tuple(UUID(e) for e in row["environment_ids"]),
            pool_id=UUID(row["default_worker_pool_id"]) if row["default_worker_pool_id"] else None,
            is_disabled=row["is_disabled"],
        )
        for row in targets_in_environment(views, str(environment_id))
    ]


async def run_on_behalf(run: TaskRun, step: Step) -> StepState:
    """Plan the step's executions (unless a resumed run planned them already), run them
    and record the step's outcome."""
    task = run.known if run.known is not None else await run._load()
    planned = task.executions.get(step.name)
    if planned is None:
        roles = ", ".join(repr(r) for r in step.on_behalf_of_roles)
        if task.environment_id is None or task.environment_name is None:
            return await run._finish_step(
                step.name, StepState.FAILED,
                reason=f"the step runs on behalf of roles {roles}, so it needs a run into an "
                "environment: run the project with an environment",
            )
        candidates = await asyncio.to_thread(_targets, run.ctx.views, task.environment_id)
        chosen = targets_for(step.on_behalf_of_roles, task.environment_id, candidates)
        if not chosen:
            reason = no_targets_reason(step.on_behalf_of_roles, task.environment_name)
            if step.skip_if_no_targets:
                return await run._finish_step(step.name, StepState.SKIPPED, reason=reason)
            return await run._finish_step(step.name, StepState.FAILED, reason=reason)
        executions = plan_executions(step.name, chosen, task.runs.keys())
        actor = run.ctx.actor
        task = await run._update(lambda t: t.plan_executions(step.name, executions, actor))
        planned = task.executions[step.name]
    slots = asyncio.Semaphore(step.max_parallelism or DEFAULT_MAX_PARALLELISM)

    async def one(target: TargetExecution) -> StepState:
        async with slots:
            return await _execute(run, Execution.for_target(step, target))

    states = await asyncio.gather(*(one(t) for t in planned))
    outcome, reason = executions_outcome(
        [(t.target_name, s) for t, s in zip(planned, states, strict=True)]
    )
    return await run._finish_step(step.name, outcome, reason=reason)


async def _execute(run: TaskRun, execution: Execution) -> StepState:
    """One execution, its failure inside the server recorded against it alone, so the
    other targets' executions go on."""
    key = execution.key
    try:
        known = run.known.run_of(key) if run.known is not None else None
        if known is not None and known.state.is_final:
            return known.state
        if run.cancel.is_set() or (run.known is not None and run.known.cancel_requested):
            return await run._finish_step(key, StepState.SKIPPED, reason="task cancelled")
        return await run.script(execution)
    except InvalidTransition as exc:
        log.info("execution changed under us", extra={"task_id": str(run.task_id), "error": str(exc)})
        return (await run._load()).run_of(key).state
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("execution failed inside the server", extra={"task_id": str(run.task_id)})
        return await run._finish_step(
            key, StepState.FAILED, reason=f"internal error: {type(exc).__name__}: {exc}"
        )
