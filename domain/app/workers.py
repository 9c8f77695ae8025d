"""Commands on workers: register, change, deregister."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actors import Actor
from domain.app.base import Saved, command
from domain.app.policies import PolicyCommands
from domain.app.pools import PoolCommands
from domain.errors import NotFound, Rejected
from domain.pools import WorkerPool
from domain.rules import check_capacity, clean_name
from domain.ssh import SshSettings, changed_ssh, check_ssh_settings
from domain.workers import DEFAULT_CAPACITY, CommsStyle, HealthStatus, Worker, check_pool_ids

WORKER = "worker"
MAX_ENDPOINT_LENGTH = 2000


class WorkerCommands(PoolCommands, PolicyCommands):
    """Workers and their pool memberships, saved together so pools never disagree."""

    def get_worker(self, worker_id: UUID) -> Worker:
        """One registered worker by id, or NotFound."""
        return self._get(Worker, worker_id, "worker")

    def _existing_pools(self, pool_ids: tuple[UUID, ...]) -> list[WorkerPool]:
        pools = []
        for pool_id in check_pool_ids(pool_ids):
            try:
                pools.append(self.get_pool(pool_id))
            except NotFound:
                raise Rejected(f"worker pool {pool_id} does not exist") from None
        return pools

    def _existing_policy(self, policy_id: UUID) -> UUID:
        try:
            return self.get_policy(policy_id).id
        except NotFound:
            raise Rejected(f"machine policy {policy_id} does not exist") from None

    @command
    def register_worker(
        self,
        *,
        name: str,
        pool_ids: tuple[UUID, ...],
        comms_style: CommsStyle,
        endpoint: str | None = None,
        machine_policy_id: UUID | None = None,
        capacity: int = DEFAULT_CAPACITY,
        secret_hash: str | None = None,
        ssh: SshSettings | None = None,
        actor: Actor,
    ) -> Saved[Worker]:
        """A new worker in existing pools under an existing policy (the default one when
        none is named). The worker, its pools and its name are saved in one go, with its
        agent's credentials (``secret_hash``) when it has an agent, or its ``ssh``
        settings (required for an SSH worker, refused for any other)."""
        name = clean_name(name, "worker name")
        if (comms_style is CommsStyle.SSH) != (ssh is not None):
            raise Rejected(
                "an ssh worker needs ssh settings" if ssh is None
                else f"ssh settings are only for an ssh worker, not a {comms_style.value} one"
            )
        if ssh is not None:
            check_ssh_settings(ssh)
        if endpoint is not None and len(endpoint) > MAX_ENDPOINT_LENGTH:
            raise Rejected(f"endpoint must be at most {MAX_ENDPOINT_LENGTH} characters")
        pools = self._existing_pools(pool_ids)
        policy_id = self._existing_policy(machine_policy_id or self.default_policy_id())
        worker = Worker(
            name=name,
            pool_ids=pool_ids,
            comms_style=comms_style,
            endpoint=endpoint,
            machine_policy_id=policy_id,
            capacity=check_capacity(capacity),
            actor=actor,
        )
        if secret_hash is not None:
            worker.issue_credentials(secret_hash, actor)
        if ssh is not None:
            worker.configure_ssh(ssh, actor)
        index = self._reserve_name(WORKER, name, worker.id, actor)
        for pool in pools:
            pool.add_member(worker.id, actor)
        return Saved(worker, self._save(index, worker, *pools))

    @command
    def update_worker(
        self,
        worker_id: UUID,
        *,
        name: str | None = None,
        pool_ids: tuple[UUID, ...] | None = None,
        is_disabled: bool | None = None,
        capacity: int | None = None,
        machine_policy_id: UUID | None = None,
        ssh: Mapping[str, Any] | None = None,
        actor: Actor,
    ) -> Saved[Worker]:
        """Change any of a worker's settings; fields left as None stay as they are.
        ``ssh`` maps SshSettings field names to new values (an SSH worker only); naming
        one of the key fields replaces the key."""
        worker = self.get_worker(worker_id)
        if ssh is not None:
            if worker.comms_style is not CommsStyle.SSH:
                raise Rejected("ssh settings are only for an ssh worker")
            worker.configure_ssh(changed_ssh(worker.ssh, ssh), actor)
        to_save: list[Aggregate] = []
        if name is not None:
            name = clean_name(name, "worker name")
            to_save += self._rename(WORKER, worker.name, name, worker.id, actor)
            worker.rename(name, actor)
        if pool_ids is not None:
            new_pools = self._existing_pools(pool_ids)
            for pool in new_pools:
                pool.add_member(worker.id, actor)
            for old_id in set(worker.pool_ids) - set(pool_ids):
                old = self._find(WorkerPool, old_id)
                if old is not None and not old.is_deleted:
                    old.remove_member(worker.id, actor)
                    to_save.append(old)
            to_save += new_pools
            worker.change_pools(pool_ids, actor)
        if capacity is not None:
            worker.change_capacity(check_capacity(capacity), actor)
        if machine_policy_id is not None:
            worker.change_policy(self._existing_policy(machine_policy_id), actor)
        if is_disabled is True:
            worker.disable(actor)
        elif is_disabled is False:
            worker.enable(actor)
        return Saved(worker, self._save(worker, *to_save))

    @command
    def record_worker_offline(self, worker_id: UUID, detail: str, *, actor: Actor) -> int | None:
        """The worker's agent stopped answering (recorded on the transition only). Returns
        the position written, None when nothing changed."""
        worker = self.get_worker(worker_id)
        worker.went_offline(detail, actor)
        return self._save(worker) if worker.pending_events else None

    @command
    def record_worker_online(self, worker_id: UUID, *, actor: Actor) -> int | None:
        """The worker's agent is heard from again (recorded on the transition only)."""
        worker = self.get_worker(worker_id)
        worker.came_online(actor)
        return self._save(worker) if worker.pending_events else None

    @command
    def record_health(
        self, worker_id: UUID, status: HealthStatus, detail: str, *, actor: Actor
    ) -> int:
        """A health check's result."""
        worker = self.get_worker(worker_id)
        worker.record_health(status, detail, actor)
        return self._save(worker)

    @command
    def deregister_worker(self, worker_id: UUID, *, actor: Actor) -> int:
        """Remove a worker: it leaves its pools and frees its name in the same save."""
        worker = self.get_worker(worker_id)
        pools = [p for p in (self._find(WorkerPool, i) for i in worker.pool_ids) if p is not None]
        for pool in pools:
            pool.remove_member(worker.id, actor)
        index = self._release_name(WORKER, worker.name, actor)
        worker.deregister(actor)
        return self._save(worker, index, *pools)
