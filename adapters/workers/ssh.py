"""The server's SSH workers: one connection pool, one runner per worker (its channels
bounded by the worker's capacity), and the health check over SSH. The server itself is
the "agent" of an SSH worker, so its steps are recorded like the built-in worker's."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from adapters.secrets import SecretBox
from adapters.ssh.connections import SshConnections, SshTarget, SshUnavailable
from adapters.ssh.runner import SshStepRunner
from adapters.ssh.targets import SshTargetError, ssh_target_of
from adapters.workers.gateway import WorkerUnavailable
from agent.packages import PackageCache
from domain.app import Shoal
from domain.messages import HealthAnswer

log = logging.getLogger("shoal.workers")


class SshWorkers:
    """``runner(worker_id)`` for steps and health checks; ``close()`` on shutdown."""

    def __init__(self, app: Shoal, secrets: SecretBox, packages: PackageCache | None) -> None:
        self.app = app
        self.secrets = secrets
        self.packages = packages
        self.connections = SshConnections()
        self._runners: dict[str, tuple[SshTarget, int, SshStepRunner]] = {}

    def _target(self, worker_id: UUID) -> tuple[SshTarget, int]:
        spec = ssh_target_of(self.app, self.secrets, worker_id)
        capacity = self.app.get_worker(worker_id).capacity
        return SshTarget(spec.host, spec.port, spec.username, spec.host_key_fingerprint,
                         spec.private_key), capacity

    async def runner(self, worker_id: UUID) -> SshStepRunner:
        """The worker's runner, remade when its settings or capacity changed. Raises the
        accessor's errors (NotFound, SshTargetError) when it cannot be used."""
        target, capacity = await asyncio.to_thread(self._target, worker_id)
        key = str(worker_id)
        cached = self._runners.get(key)
        if cached is not None and cached[0] == target and cached[1] == capacity:
            return cached[2]
        runner = SshStepRunner(self.connections, key, target, capacity, packages=self.packages)
        self._runners[key] = (target, capacity, runner)
        return runner

    async def connect(self, worker_id: UUID) -> SshStepRunner:
        """The runner, after making sure its connection is up (raises HostKeyMismatch or
        SshUnavailable, so the caller can tell the worker's state before giving it a step)."""
        runner = await self.runner(worker_id)
        target = self._runners[str(worker_id)][0]
        await self.connections.get(str(worker_id), target)
        return runner

    async def health(self, worker_id: str, script: str, timeout_s: float) -> HealthAnswer:
        """The policy's health script over SSH; WorkerUnavailable when unreachable."""
        try:
            runner = await self.runner(UUID(worker_id))
            return await runner.health(script, timeout_s)
        except SshTargetError as exc:  # its settings cannot be used: say so, do not retry
            return HealthAnswer("unhealthy", str(exc))
        except SshUnavailable as exc:
            raise WorkerUnavailable(str(exc)) from None

    async def close(self) -> None:
        """Close every connection."""
        await self.connections.close()
