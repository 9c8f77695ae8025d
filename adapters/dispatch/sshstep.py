"""A script step on an SSH worker: the server connects (host key pinned), runs the step
over the worker's shared connection and records it as it goes, like the built-in
worker's. A worker that cannot be used gives the step back, with the worker's state
recorded so routing passes it over: a host key that does not match makes it unhealthy
(naming both fingerprints), an unreachable host unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from adapters.dispatch.onserver import run_on_server, step_request
from adapters.dispatch.payloads import built_in_artifacts
from adapters.ssh.connections import HostKeyMismatch, SshUnavailable
from adapters.ssh.targets import SshTargetError
from domain.errors import NotFound
from domain.messages import PackageRef
from domain.plan import StepState
from domain.routing import RunOnWorker
from domain.workers import HealthStatus

if TYPE_CHECKING:
    from adapters.dispatch.execution import Execution
    from adapters.dispatch.taskrun import TaskRun


async def run_on_ssh(
    run: TaskRun, execution: Execution, decision: RunOnWorker, pool_name: str,
    packages: tuple[PackageRef, ...],
) -> StepState | None:
    """Run the assigned step on its SSH worker; None when the worker could not take it
    (the step was given back and is routed again)."""
    ctx, worker_id = run.ctx, decision.worker_id
    ssh = ctx.hub.ssh
    status = HealthStatus.UNAVAILABLE
    try:
        if ssh is None:
            raise SshUnavailable("this server has no SSH transport")
        runner = await ssh.connect(worker_id)
    except HostKeyMismatch as exc:
        status, why = HealthStatus.UNHEALTHY, str(exc)
    except (SshTargetError, NotFound) as exc:
        status, why = HealthStatus.UNHEALTHY, str(exc)
    except SshUnavailable as exc:
        why = str(exc)
    else:
        request = step_request(run, execution, decision.worker_name, pool_name, packages)
        artifacts = built_in_artifacts(ctx.app, ctx.artifacts, run.task_id, execution.key,
                                       ctx.actor)
        return await run_on_server(run, request, runner, artifacts)
    reason = f"worker {decision.worker_name!r} could not take the step: {why}"
    await run._update(lambda t: t.requeue(execution.key, reason, ctx.actor))
    run.refused[worker_id] = time.monotonic()
    with contextlib.suppress(NotFound):
        await asyncio.to_thread(ctx.app.record_health, worker_id, status, why, actor=ctx.actor)
    return None
