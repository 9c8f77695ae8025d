"""Steps run on behalf of roles: which targets a step runs for, how each execution is
named in its task, and what the executions add up to. Pure rules; the task run applies
them."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from domain.codec import register_record
from domain.plan import StepState
from domain.rules import name_key


@register_record
@dataclass(frozen=True)
class TargetExecution:
    """One execution of a step on behalf of one target, as planned when the step started:
    ``key`` names its run within the task (its events, reports and log section), and the
    target is kept as it was then, so a later change to the target does not change what
    this run did."""

    key: str
    target_id: UUID
    target_name: str
    roles: tuple[str, ...]
    pool_id: UUID | None


@dataclass(frozen=True)
class TargetCandidate:
    """A deployment target as the planning rule sees it."""

    target_id: UUID
    name: str
    roles: tuple[str, ...]
    environment_ids: tuple[UUID, ...]
    pool_id: UUID | None
    is_disabled: bool


def targets_for(
    roles: Sequence[str], environment_id: UUID, targets: Iterable[TargetCandidate]
) -> list[TargetCandidate]:
    """The enabled targets in the environment that have any of ``roles`` (compared as
    names are: case does not matter), ordered by name so executions start in a stable
    order."""
    wanted = {name_key(r) for r in roles}
    chosen = [
        t for t in targets
        if not t.is_disabled and environment_id in t.environment_ids
        and any(name_key(r) in wanted for r in t.roles)
    ]
    return sorted(chosen, key=lambda t: (name_key(t.name), str(t.target_id)))


def execution_key(step: str, target: str, taken: Collection[str]) -> str:
    """How the execution of ``step`` on behalf of ``target`` is named in the task: the
    step's name with the target's in brackets. Step names are free text, so should that
    name already be taken (a step literally named so), a number is added."""
    key = f"{step} [{target}]"
    n = 2
    while key in taken:
        key = f"{step} [{target}] #{n}"
        n += 1
    return key


def plan_executions(
    step: str, targets: Sequence[TargetCandidate], taken: Collection[str]
) -> tuple[TargetExecution, ...]:
    """One execution per target, each with a key no other run of the task has."""
    used = set(taken)
    planned = []
    for target in targets:
        key = execution_key(step, target.name, used)
        used.add(key)
        planned.append(TargetExecution(key, target.target_id, target.name, target.roles,
                                       target.pool_id))
    return tuple(planned)


def no_targets_reason(roles: Sequence[str], environment: str) -> str:
    """Why a step on behalf of ``roles`` had nothing to run for."""
    named = ", ".join(repr(r) for r in roles)
    noun = "role" if len(roles) == 1 else "any of the roles"
    return f"no enabled deployment target in environment {environment!r} has {noun} {named}"


def executions_outcome(targets: Sequence[tuple[str, StepState]]) -> tuple[StepState, str]:
    """A step's outcome from its executions' (target name, final state): it failed if any
    execution failed (cancelled or timed out when that is all that went wrong), and the
    reason says how many targets did what."""
    total = len(targets)
    failed = [name for name, state in targets if state is StepState.FAILED]
    timed_out = [name for name, state in targets if state is StepState.TIMED_OUT]
    cancelled = [name for name, state in targets if state is StepState.CANCELLED]
    succeeded = sum(state is StepState.SUCCESS for _, state in targets)
    if failed:
        return StepState.FAILED, f"{len(failed)} of {total} targets failed: {', '.join(failed)}"
    if timed_out:
        return StepState.TIMED_OUT, (
            f"{len(timed_out)} of {total} targets timed out: {', '.join(timed_out)}"
        )
    if cancelled:
        return StepState.CANCELLED, f"cancelled ({succeeded} of {total} targets succeeded)"
    return StepState.SUCCESS, f"{succeeded} of {total} targets succeeded"


def scope_skip_reason(step_environments: Sequence[str], environment: str | None) -> str | None:
    """Why a step scoped to ``step_environments`` is skipped in a run into
    ``environment`` (None: no environment); None when it runs. A step scoped to no
    environment runs everywhere."""
    if not step_environments:
        return None
    if environment is not None and name_key(environment) in {name_key(e) for e in step_environments}:
        return None
    where = ", ".join(repr(e) for e in step_environments)
    if environment is None:
        return f"it runs only in {where}, and this run is into no environment"
    return f"it runs only in {where}, not in {environment!r}"

