"""Commands on tasks: queue them, change them as they run, cancel, decide interventions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.app.environments import EnvironmentCommands
from domain.app.projects import ProjectCommands
from domain.certificates import ParsedCertificate, StoredCertificate
from domain.errors import InvalidTransition, NotFound, Rejected
from domain.plan import StepState, TaskState
from domain.process import Action, Step, Syntax, check_script
from domain.reports import StepReport, refusal
from domain.tasklog import Line, TaskLog, log_id
from domain.tasks import Task, TaskKind

SCRIPT_STEP_NAME = "Run script"


@dataclass(frozen=True)
class ReportGroup:
    """One worker's reports about its steps of one task, in the order they came."""

    task_id: UUID
    worker_id: UUID
    reports: Sequence[StepReport]
    actor: Actor


@dataclass(frozen=True)
class ReportOutcome:
    """What became of a group: the task as saved and the log position when anything
    was recorded (else None), and why each refused report was refused."""

    task: Task | None
    position: int | None
    refused: list[str]


def _pending(task: Task, log: TaskLog | None) -> int:
    return len(task.pending_events) + (len(log.pending_events) if log is not None else 0)


class TaskCommands(ProjectCommands, EnvironmentCommands, CommandsBase):
    """Everything that writes a Task or its log."""

    def get_task(self, task_id: UUID) -> Task:
        """One task by id, or NotFound."""
        return self._get(Task, task_id, "task")

    @command
    def queue_script(
        self,
        *,
        syntax: Syntax,
        script_body: str,
        worker_pool_id: UUID | None = None,
        timeout_s: int | None = None,
        actor: Actor,
    ) -> Saved[Task]:
        """An ad-hoc script task with one step."""
        check_script(syntax, script_body)
        step = Step(
            name=SCRIPT_STEP_NAME,
            action=Action.SCRIPT,
            worker_pool_id=worker_pool_id,
            syntax=syntax,
            script_body=script_body,
            timeout_s=timeout_s,
        )
        (step,) = self.check_steps((step,))
        task = Task(kind=TaskKind.SCRIPT, name="Script", project_id=None, steps=(step,), actor=actor)
        return Saved(task, self._save(task))

    @command
    def queue_run(
        self, project_id: UUID, *, environment: str | None = None, actor: Actor
    ) -> Saved[Task]:
        """A task running the project's current process, into ``environment`` (a name or
        id) when given."""
        project = self.get_project(project_id)
        if not project.steps:
            raise Rejected(f"project {project.name!r} has no steps: set its process first")
        into = None
        if environment is not None:
            try:
                into = self.resolve_environment(environment)
            except NotFound:
                raise Rejected(f"environment {environment!r} does not exist") from None
        task = Task(
            kind=TaskKind.DEPLOYMENT,
            name=project.name,
            project_id=project.id,
            # Under the names its environments have now, as the run's own environment is.
            steps=tuple(self.current_environments(s) for s in project.steps),
            actor=actor,
            environment_id=into.id if into is not None else None,
            environment_name=into.name if into is not None else None,
        )
        return Saved(task, self._save(task))

    @command
    def update_task(self, task_id: UUID, change: Callable[[Task], None]) -> Saved[Task]:
        """Load a task, apply ``change`` (which calls its methods), save. Re-run on a
        concurrent write, so ``change`` must only call aggregate methods."""
        task = self.get_task(task_id)
        change(task)
        return Saved(task, self._save(task))

    def update_known_task(
        self, known: Task | None, task_id: UUID, change: Callable[[Task], None]
    ) -> Saved[Task]:
        """Like update_task, but start from ``known``, the task as the caller last saved
        it, and skip reading the store. If someone else wrote to the task since (a cancel,
        an intervention), the save conflicts and the change is made on a fresh load."""
        if known is not None:
            task = copy.deepcopy(known)
            try:
                change(task)
                return Saved(task, self._save(task))
            except (RecordConflictError, InvalidTransition):
                pass  # stale: do it again from the store
        return self.update_task(task_id, change)

    @command
    def cancel_task(self, task_id: UUID, *, actor: Actor) -> Saved[Task]:
        """Cancel: a queued task ends at once; a running one is stopped by its node."""
        task = self.get_task(task_id)
        task.request_cancel(actor)
        if task.state is TaskState.QUEUED:
            task.finish(TaskState.CANCELLED, actor)
        return Saved(task, self._save(task))

    @command
    def decide_intervention(
        self, task_id: UUID, step: str, *, approved: bool, note: str, actor: Actor
    ) -> Saved[Task]:
        """Approve or reject a manual intervention that is waiting."""
        task = self.get_task(task_id)
        task.decide(step, approved, note, actor)
        return Saved(task, self._save(task))

    @command
    def append_log(self, task_id: UUID, step: str, lines: list[Line], *, actor: Actor) -> int:
        """Add a batch of a step's log lines (one event, however many lines)."""
        log = self._find(TaskLog, log_id(task_id))
        if log is None:
            log = TaskLog(task_id=task_id, actor=actor)
        log.append(step, lines, actor)
        return self._save(log)

    @command
    def apply_reports(
        self, task_id: UUID, worker_id: UUID, reports: Sequence[StepReport], *, actor: Actor,
        log_limit: int | None = None,
    ) -> tuple[int | None, list[str]]:
        """Record what a worker reported about its steps of one task, in order, in one
        save (the task and its log together). Reports the fencing rule refuses change
        nothing; returns (position or None, why each refused report was refused).
        ``log_limit``: the characters of log a step keeps (TaskLog.append_within)."""
        task = self.get_task(task_id)
        log, refused = self._take_reports(task, None, worker_id, reports, actor, log_limit)
        parts = [a for a in (log, task) if a is not None and a.pending_events]
        return (self._save(*parts) if parts else None), refused

    def apply_report_batch(
        self, groups: Sequence[ReportGroup], log_limit: int | None = None
    ) -> list[ReportOutcome]:
        """Record several workers' reports about several tasks (a fetched batch) with one
        save for all of them. Should that save conflict (a task changed meanwhile), each
        group is applied and saved on its own instead, exactly as apply_reports does.
        One outcome per group, in order; a group of a task that does not exist has its
        reports refused. ``log_limit``: as for apply_reports."""
        try:
            return self._apply_together(groups, log_limit)
        except RecordConflictError:
            pass  # the conflicting tasks' cached copies were dropped; each is read again
        return [self._apply_alone(group, log_limit) for group in groups]

    def _apply_together(
        self, groups: Sequence[ReportGroup], log_limit: int | None
    ) -> list[ReportOutcome]:
        tasks: dict[UUID, Task | None] = {}
        logs: dict[UUID, TaskLog | None] = {}
        results: list[tuple[UUID, bool, list[str]]] = []
        for group in groups:
            if group.task_id not in tasks:
                tasks[group.task_id] = self._find(Task, group.task_id)
                logs[group.task_id] = None  # read only when a log report needs it
            task = tasks[group.task_id]
            if task is None:
                results.append((group.task_id, False, [f"task {group.task_id} does not exist"]))
                continue
            before = _pending(task, logs[group.task_id])
            logs[group.task_id], refused = self._take_reports(
                task, logs[group.task_id], group.worker_id, group.reports, group.actor, log_limit
            )
            changed = _pending(task, logs[group.task_id]) > before
            results.append((group.task_id, changed, refused))
        parts = [a for key in tasks for a in (logs[key], tasks[key])
                 if a is not None and a.pending_events]
        position = self._save(*parts) if parts else None
        return [
            ReportOutcome(tasks[task_id] if changed else None, position if changed else None,
                          refused)
            for task_id, changed, refused in results
        ]

    def _apply_alone(self, group: ReportGroup, log_limit: int | None) -> ReportOutcome:
        try:
            position, refused = self.apply_reports(
                group.task_id, group.worker_id, group.reports, actor=group.actor,
                log_limit=log_limit,
            )
        except NotFound:
            return ReportOutcome(None, None, [f"task {group.task_id} does not exist"])
        task = self.get_task(group.task_id) if position is not None else None
        return ReportOutcome(task, position, refused)

    def _take_reports(
        self, task: Task, log: TaskLog | None, worker_id: UUID, reports: Sequence[StepReport],
        actor: Actor, log_limit: int | None = None,
    ) -> tuple[TaskLog | None, list[str]]:
        """Apply one worker's reports to the task, and to its log (``log``, or read or
        made when a report first needs it: most steps' reports carry no lines); the log
        and why each refused report was refused."""
        refused: list[str] = []
        for report in reports:
            why = refusal(task.runs.get(report.step), worker_id, report.assignment)
            if why is None and task.state is not TaskState.EXECUTING:
                why = f"the task is {task.state.value}"
            if why is not None:
                refused.append(f"{report.kind} report for step {report.step!r}: {why}")
                continue
            if task.runs[report.step].state is StepState.ASSIGNED:
                # Reports arrive in order on one stream, so this is normally "started";
                # should it have been lost, the step still must not look as if never run.
                task.mark_started(report.step, report.pid, actor, report.started_at)
            if report.kind == "log" and report.lines:
                if log is None:
                    log = self._find(TaskLog, log_id(task.id)) or TaskLog(task_id=task.id, actor=actor)
                if log_limit is None:
                    log.append(report.step, list(report.lines), actor)
                else:
                    log.append_within(report.step, list(report.lines), log_limit, actor)
            elif report.kind == "artifact":
                try:
                    task.store_artifact(report.step, report.name, report.size, report.sha256, actor)
                except InvalidTransition as exc:
                    refused.append(f"artifact report for step {report.step!r}: {exc}")
            elif report.kind == "finished":
                outcome = StepState(report.outcome or "failed")
                task.finish_step(report.step, outcome, report.exit_code, report.reason, actor)
                task.finish_if_done(actor)
        return log, refused

    @command
    def store_certificate(
        self, name: str, parsed: ParsedCertificate, *, actor: Actor
    ) -> Saved[StoredCertificate]:
        """Keep an imported certificate chain (public parts only)."""
        cert = StoredCertificate(
            name=name,
            subject=parsed.subject,
            issuer=parsed.issuer,
            not_before=parsed.not_before,
            not_after=parsed.not_after,
            thumbprint=parsed.thumbprint,
            certificates_pem=parsed.certificates_pem,
            actor=actor,
        )
        return Saved(cert, self._save(cert))

    @command
    def store_artifact(
        self, task_id: UUID, step: str, name: str, size: int, sha256: str, *, actor: Actor
    ) -> int:
        """Record a file the built-in worker returned from a running step (its bytes are
        in the artifact store already); returns the log position."""
        task = self.get_task(task_id)
        task.store_artifact(step, name, size, sha256, actor)
        return self._save(task)
