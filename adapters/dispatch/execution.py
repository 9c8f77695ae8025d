"""What one run of a script step is, wherever it goes: the step itself, or the step on
behalf of one deployment target. The task run, the built-in worker, SSH workers and
agents all take one of these, so an execution on behalf of a target is routed, fenced,
logged and reported exactly as a plain step is, only under its own key."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.executions import TargetExecution
from domain.process import Step


@dataclass(frozen=True)
class Execution:
    """``key`` names the run within the task: the step's name, or the execution's key."""

    step: Step
    key: str
    target: TargetExecution | None = None

    @classmethod
    def of(cls, step: Step) -> Execution:
        """The step's own (only) execution."""
        return cls(step, step.name)

    @classmethod
    def for_target(cls, step: Step, target: TargetExecution) -> Execution:
        """The step's execution on behalf of ``target``."""
        return cls(step, target.key, target)

    @property
    def target_pool_id(self) -> UUID | None:
        """The default worker pool of the target this runs on behalf of, if any."""
        return self.target.pool_id if self.target is not None else None

    def env(self, task_id: UUID, worker_name: str, pool_name: str) -> dict[str, str]:
        """The script's environment variables (CONTRACT.md, "What a script sees")."""
        env = {
            "SHOAL_TASK_ID": str(task_id),
            "SHOAL_STEP_NAME": self.step.name,
            "SHOAL_WORKER_NAME": worker_name,
            "SHOAL_WORKER_POOL": pool_name,
        }
        if self.target is not None:
            env["SHOAL_TARGET_NAME"] = self.target.target_name
            env["SHOAL_TARGET_ROLES"] = ",".join(self.target.roles)
        return env
