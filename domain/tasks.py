"""Tasks: one run of a process or of an ad-hoc script. Their events are the only record
of what happened."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from uuid import UUID

from eventsourcing.domain import event

from domain.actors import Actor
from domain.artifacts import MAX_ARTIFACT_BYTES, MAX_ARTIFACTS_PER_STEP, is_sha256, name_problem
from domain.base import ShoalAggregate
from domain.codec import register_enum
from domain.errors import InvalidTransition
from domain.executions import TargetExecution
from domain.plan import StepState, TaskState, task_outcome
from domain.process import Action, Step


@register_enum
class TaskKind(str, Enum):
    """What a task runs."""

    DEPLOYMENT = "deployment"
    SCRIPT = "script"


@dataclass(frozen=True)
class StepRun:
    """A step's progress within a task (state held by the aggregate, not stored as such)."""

    state: StepState = StepState.PENDING
    worker_id: UUID | None = None
    worker_name: str | None = None
    pool_id: UUID | None = None
    exit_code: int | None = None
    reason: str = ""
    pid: int | None = None
    assignment: int | None = None


class Task(ShoalAggregate):
    """A task and the per-step state of its run."""

    class Queued(ShoalAggregate.Created):
        kind: TaskKind
        name: str
        project_id: UUID | None
        steps: tuple[Step, ...]
        environment_id: UUID | None
        environment_name: str | None

    class Started(ShoalAggregate.Event):
        node: str

    class StepWaiting(ShoalAggregate.Event):
        step: str
        reason: str

    class ExecutionsPlanned(ShoalAggregate.Event):
        step: str
        executions: tuple[TargetExecution, ...]

    class StepAssigned(ShoalAggregate.Event):
        step: str
        pool_id: UUID | None
        worker_id: UUID | None
        worker_name: str

    class StepRequeued(ShoalAggregate.Event):
        step: str
        reason: str

    class StepStarted(ShoalAggregate.Event):
        step: str
        pid: int | None

    class StepFinished(ShoalAggregate.Event):
        step: str
        outcome: StepState
        exit_code: int | None
        reason: str

    class ArtifactStored(ShoalAggregate.Event):
        step: str
        name: str
        size: int
        sha256: str

    class InterventionRequested(ShoalAggregate.Event):
        step: str
        instructions: str

    class InterventionDecided(ShoalAggregate.Event):
        step: str
        approved: bool
        note: str

    class CancelRequested(ShoalAggregate.Event):
        pass

    class Finished(ShoalAggregate.Event):
        state: TaskState

    @event(Queued)
    def __init__(
        self,
        kind: TaskKind,
        name: str,
        project_id: UUID | None,
        steps: tuple[Step, ...],
        actor: Actor,
        environment_id: UUID | None = None,
        environment_name: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.project_id = project_id
        self.steps = steps
        self.environment_id = environment_id
        self.environment_name = environment_name
        self.state = TaskState.QUEUED
        self.node: str | None = None
        # Keyed by run: a step's name, or the key of one of its executions on behalf
        # of a target (see ``executions``).
        self.runs: dict[str, StepRun] = {s.name: StepRun() for s in steps}
        # step -> its executions on behalf of targets, once planned
        self.executions: dict[str, tuple[TargetExecution, ...]] = {}
        # execution key -> its step's name
        self.parent_of: dict[str, str] = {}
        self.cancel_requested = False
        self.queued_by = actor.name
        self.is_deleted = False
        # step -> artifact name -> (size, sha256)
        self.artifacts: dict[str, dict[str, tuple[int, str]]] = {}

    # -- queries -------------------------------------------------------------------------

    def step(self, name: str) -> Step:
        """The step spec by name."""
        for step in self.steps:
            if step.name == name:
                return step
        raise InvalidTransition(f"task has no step named {name!r}")

    def run_of(self, name: str) -> StepRun:
        """The progress of a step, or of one execution of it (by its key)."""
        run = self.runs.get(name)
        if run is None:
            raise InvalidTransition(f"task has no step named {name!r}")
        return run

    def spec_of(self, name: str) -> Step:
        """The step a run (a step, or an execution of it by key) runs."""
        return self.step(self.parent_of.get(name, name))

    def execution_of(self, key: str) -> TargetExecution | None:
        """The planned execution named ``key``; None for a step's own run."""
        step = self.parent_of.get(key)
        if step is None:
            return None
        return next(e for e in self.executions[step] if e.key == key)

    # -- commands ------------------------------------------------------------------------

    def _require_active(self) -> None:
        if self.state.is_final:
            raise InvalidTransition(f"the task has already ended ({self.state.value})")

    def _require_executing(self, step: str) -> StepRun:
        """The task is running and ``step`` has not ended: what changing a step needs."""
        self._require_active()
        if self.state is not TaskState.EXECUTING:
            raise InvalidTransition(f"the task is {self.state.value}, not executing")
        run = self.run_of(step)
        if run.state.is_final:
            raise InvalidTransition(f"step {step!r} already ended ({run.state.value})")
        return run

    def start(self, node: str, actor: Actor) -> None:
        """A server node takes the task out of the queue."""
        if self.state is not TaskState.QUEUED:
            raise InvalidTransition(f"the task is {self.state.value}, not queued")
        self._start(node=node, actor=actor)

    @event(Started)
    def _start(self, node: str, actor: Actor) -> None:
        self.state = TaskState.EXECUTING
        self.node = node

    def wait_for_worker(self, step: str, reason: str, actor: Actor) -> None:
        """Record why a step cannot start yet (only when the reason changes)."""
        run = self._require_executing(step)
        if run.state is not StepState.WAITING or run.reason != reason:
            self._wait(step=step, reason=reason, actor=actor)

    @event(StepWaiting)
    def _wait(self, step: str, reason: str, actor: Actor) -> None:
        self.runs[step] = replace(self.runs[step], state=StepState.WAITING, reason=reason)

    def plan_executions(
        self, step: str, executions: tuple[TargetExecution, ...], actor: Actor
    ) -> None:
        """Record the targets a step on behalf of roles runs for, one execution each;
        the step runs until they have all ended. Planned once per task."""
        spec = self.step(step)
        run = self._require_executing(step)
        if not spec.on_behalf_of_roles:
            raise InvalidTransition(f"step {step!r} does not run on behalf of roles")
        if step in self.executions or run.state not in (StepState.PENDING, StepState.WAITING):
            raise InvalidTransition(f"the executions of step {step!r} are already planned")
        if not executions:
            raise InvalidTransition(f"step {step!r}: no executions to plan")
        keys = [e.key for e in executions]
        if len(set(keys)) != len(keys) or any(k in self.runs for k in keys):
            raise InvalidTransition(f"step {step!r}: execution keys must be new and unique")
        self._plan_executions(step=step, executions=executions, actor=actor)

    @event(ExecutionsPlanned)
    def _plan_executions(
        self, step: str, executions: tuple[TargetExecution, ...], actor: Actor
    ) -> None:
        self.executions[step] = executions
        self.runs[step] = replace(self.runs[step], state=StepState.RUNNING, reason="")
        for execution in executions:
            self.runs[execution.key] = StepRun()
            self.parent_of[execution.key] = step

    def assign(
        self, step: str, pool_id: UUID | None, worker_id: UUID | None, worker_name: str, actor: Actor
    ) -> None:
        """Give a step, or one execution of it, to a worker (None: the built-in
        worker)."""
        if step in self.executions:
            raise InvalidTransition(f"step {step!r} runs as one execution per target")
        if self._require_executing(step).state not in (
            StepState.PENDING, StepState.WAITING, StepState.ASSIGNED
        ):
            raise InvalidTransition(f"step {step!r} is {self.runs[step].state.value}")
        self._assign(step=step, pool_id=pool_id, worker_id=worker_id, worker_name=worker_name,
                     actor=actor)

    @event(StepAssigned)
    def _assign(
        self, step: str, pool_id: UUID | None, worker_id: UUID | None, worker_name: str, actor: Actor
    ) -> None:
        # The assignment's version is its fencing token: reports must quote it.
        self.runs[step] = replace(
            self.runs[step], state=StepState.ASSIGNED, pool_id=pool_id, worker_id=worker_id,
            worker_name=worker_name, reason="", assignment=self.version + 1,
        )

    def requeue(self, step: str, reason: str, actor: Actor) -> None:
        """Take an assigned step that never started back from its worker (the worker was
        lost or refused it); it waits to be assigned again, and its old fencing token is
        void."""
        if self._require_executing(step).state is not StepState.ASSIGNED:
            raise InvalidTransition(f"step {step!r} is {self.runs[step].state.value}, not assigned")
        self._requeue(step=step, reason=reason, actor=actor)

    @event(StepRequeued)
    def _requeue(self, step: str, reason: str, actor: Actor) -> None:
        self.runs[step] = replace(
            self.runs[step], state=StepState.WAITING, worker_id=None, worker_name=None,
            reason=reason, assignment=None,
        )

    def mark_started(
        self, step: str, pid: int | None, actor: Actor, at: datetime | None = None
    ) -> None:
        """The step's process is running; since ``at`` when the runner says when it began
        (kept within the task's last event and now, so the task's times never run
        backwards or ahead)."""
        if self._require_executing(step).state is not StepState.ASSIGNED:
            raise InvalidTransition(f"step {step!r} is {self.runs[step].state.value}, not assigned")
        if at is not None:
            at = max(min(at, self.StepStarted.create_timestamp()), self.modified_on)
        self._mark_started(step=step, pid=pid, actor=actor, timestamp=at)

    @event(StepStarted)
    def _mark_started(
        self, step: str, pid: int | None, actor: Actor, timestamp: datetime | None = None
    ) -> None:
        self.runs[step] = replace(self.runs[step], state=StepState.RUNNING, pid=pid)

    def finish_step(
        self, step: str, outcome: StepState, exit_code: int | None, reason: str, actor: Actor
    ) -> None:
        """The step ended (or was skipped) with ``outcome``."""
        if not outcome.is_final:
            raise InvalidTransition(f"{outcome.value} is not an outcome")
        self._require_executing(step)
        self._finish_step(step=step, outcome=outcome, exit_code=exit_code, reason=reason, actor=actor)

    @event(StepFinished)
    def _finish_step(
        self, step: str, outcome: StepState, exit_code: int | None, reason: str, actor: Actor
    ) -> None:
        self.runs[step] = replace(self.runs[step], state=outcome, exit_code=exit_code, reason=reason)

    def store_artifact(self, step: str, name: str, size: int, sha256: str, actor: Actor) -> None:
        """A running step returned a file (its bytes are already in the artifact store).
        Storing a name again replaces it; a step returns at most MAX_ARTIFACTS_PER_STEP."""
        self._require_executing(step)
        if step in self.executions:
            raise InvalidTransition(f"step {step!r} runs per target: its executions return files")
        problem = name_problem(name)
        if problem is not None:
            raise InvalidTransition(f"artifact name {name!r} refused: {problem}")
        if not 0 <= size <= MAX_ARTIFACT_BYTES or not is_sha256(sha256):
            raise InvalidTransition(f"artifact {name!r}: bad size or SHA-256")
        held = self.artifacts.get(step, {})
        if name not in held and len(held) >= MAX_ARTIFACTS_PER_STEP:
            raise InvalidTransition(f"step {step!r} already returned {MAX_ARTIFACTS_PER_STEP} artifacts")
        self._store_artifact(step=step, name=name, size=size, sha256=sha256, actor=actor)

    @event(ArtifactStored)
    def _store_artifact(self, step: str, name: str, size: int, sha256: str, actor: Actor) -> None:
        self.artifacts.setdefault(step, {})[name] = (size, sha256)

    def request_intervention(self, step: str, instructions: str, actor: Actor) -> None:
        """A manual intervention step waits for a person."""
        if self.spec_of(step).action is not Action.MANUAL_INTERVENTION or step in self.parent_of:
            raise InvalidTransition(f"step {step!r} is not a manual intervention")
        if self._require_executing(step).state is StepState.AWAITING_INTERVENTION:
            raise InvalidTransition(f"step {step!r} is already waiting for an intervention")
        self._request_intervention(step=step, instructions=instructions, actor=actor)

    @event(InterventionRequested)
    def _request_intervention(self, step: str, instructions: str, actor: Actor) -> None:
        self.runs[step] = replace(self.runs[step], state=StepState.AWAITING_INTERVENTION)

    def decide(self, step: str, approved: bool, note: str, actor: Actor) -> None:
        """Someone approves or rejects a waiting manual intervention."""
        self._require_active()
        if self.run_of(step).state is not StepState.AWAITING_INTERVENTION:
            raise InvalidTransition(f"step {step!r} is not waiting for an intervention")
        self._decide(step=step, approved=approved, note=note, actor=actor)

    @event(InterventionDecided)
    def _decide(self, step: str, approved: bool, note: str, actor: Actor) -> None:
        self.runs[step] = replace(
            self.runs[step],
            state=StepState.SUCCESS if approved else StepState.FAILED,
            reason=f"{'approved' if approved else 'rejected'} by {actor.name}"
            + (f": {note}" if note else ""),
        )

    def request_cancel(self, actor: Actor) -> None:
        """Ask for the task to stop; a queued task ends at once, a running one soon."""
        self._require_active()
        if not self.cancel_requested:
            self._request_cancel(actor=actor)

    @event(CancelRequested)
    def _request_cancel(self, actor: Actor) -> None:
        self.cancel_requested = True

    def finish_if_done(self, actor: Actor) -> bool:
        """End the task once every step has ended; True when it did. Letting the last
        step's save also end the task saves a round trip per task."""
        if self.state.is_final or not all(r.state.is_final for r in self.runs.values()):
            return False
        outcome = task_outcome([r.state for r in self.runs.values()], self.cancel_requested)
        self.finish(outcome, actor)
        return True

    def finish(self, state: TaskState, actor: Actor) -> None:
        """The task ended with ``state``."""
        self._require_active()
        if not state.is_final:
            raise InvalidTransition(f"{state.value} is not a final state")
        self._finish(state=state, actor=actor)

    @event(Finished)
    def _finish(self, state: TaskState, actor: Actor) -> None:
        self.state = state
        # Steps never reached (a task cancelled while queued) end as skipped.
        reason = "task cancelled" if state is TaskState.CANCELLED else "task ended"
        for name, run in self.runs.items():
            if not run.state.is_final:
                self.runs[name] = replace(run, state=StepState.SKIPPED, reason=reason)
