"""Commands on deployment targets. A target, the environments it is in and its default
pool are saved together, so 'delete only when unused' holds for both."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actors import Actor
from domain.app.base import Saved, command
from domain.app.environments import EnvironmentCommands
from domain.app.pools import PoolCommands
from domain.environments import Environment
from domain.errors import NotFound, Rejected
from domain.pools import WorkerPool
from domain.rules import clean_name
from domain.targets import (
    KEEP,
    DeploymentTarget,
    Keep,
    TargetKind,
    check_environment_ids,
    clean_roles,
)

TARGET = "target"


class TargetCommands(EnvironmentCommands, PoolCommands):
    """Create, change and delete deployment targets."""

    def get_target(self, target_id: UUID) -> DeploymentTarget:
        """One target by id, or NotFound."""
        return self._get(DeploymentTarget, target_id, "target")

    def resolve_target(self, name_or_id: str) -> DeploymentTarget:
        """A target named by its id or its name (ids win when both could match)."""
        try:
            return self.get_target(UUID(name_or_id))
        except (ValueError, NotFound):
            pass
        owner = self.owner_of(TARGET, name_or_id)
        if owner is None:
            raise NotFound(f"target {name_or_id!r} not found")
        return self.get_target(owner)

    def _existing_environments(self, environment_ids: tuple[UUID, ...]) -> list[Environment]:
        environments = []
        for environment_id in check_environment_ids(environment_ids):
            try:
                environments.append(self.get_environment(environment_id))
            except NotFound:
                raise Rejected(f"environment {environment_id} does not exist") from None
        return environments

    def _existing_pool(self, pool_id: UUID) -> WorkerPool:
        try:
            return self.get_pool(pool_id)
        except NotFound:
            raise Rejected(f"worker pool {pool_id} does not exist") from None

    @command
    def create_target(
        self,
        *,
        name: str,
        kind: TargetKind = TargetKind.CLOUD_REGION,
        roles: tuple[str, ...],
        environment_ids: tuple[UUID, ...],
        default_worker_pool_id: UUID | None = None,
        is_disabled: bool = False,
        actor: Actor,
    ) -> Saved[DeploymentTarget]:
        """A new target in existing environments, with an existing default pool if any.
        The target, its environments, its pool and its name are saved in one go."""
        name = clean_name(name, "target name")
        try:
            kind = TargetKind(kind)
        except ValueError:
            raise Rejected(f"unknown target kind {kind!r}") from None
        roles = clean_roles(roles)
        environments = self._existing_environments(environment_ids)
        pool = None if default_worker_pool_id is None else self._existing_pool(
            default_worker_pool_id
        )
        target = DeploymentTarget(
            name=name, kind=kind, roles=roles, environment_ids=environment_ids,
            default_worker_pool_id=default_worker_pool_id, is_disabled=is_disabled, actor=actor,
        )
        index = self._reserve_name(TARGET, name, target.id, actor)
        for environment in environments:
            environment.attach_target(target.id, actor)
        if pool is not None:
            pool.attach_target(target.id, actor)
        return Saved(target, self._save(index, target, *environments, pool))

    @command
    def update_target(
        self,
        target_id: UUID,
        *,
        name: str | None = None,
        roles: tuple[str, ...] | None = None,
        environment_ids: tuple[UUID, ...] | None = None,
        default_worker_pool_id: UUID | Keep | None = KEEP,
        is_disabled: bool | None = None,
        actor: Actor,
    ) -> Saved[DeploymentTarget]:
        """Change any of a target's settings; fields left as None (KEEP for the default
        pool, where None clears it) stay as they are."""
        target = self.get_target(target_id)
        to_save: list[Aggregate] = []
        if name is not None:
            name = clean_name(name, "target name")
            to_save += self._rename(TARGET, target.name, name, target.id, actor)
            target.rename(name, actor)
        if roles is not None:
            target.change_roles(clean_roles(roles), actor)
        if environment_ids is not None:
            to_save += self._move_environments(target, environment_ids, actor)
        if default_worker_pool_id is not KEEP:
            to_save += self._move_default_pool(target, default_worker_pool_id, actor)
        if is_disabled is True:
            target.disable(actor)
        elif is_disabled is False:
            target.enable(actor)
        return Saved(target, self._save(target, *to_save))

    def _move_environments(
        self, target: DeploymentTarget, environment_ids: tuple[UUID, ...], actor: Actor
    ) -> list[Aggregate]:
        new = self._existing_environments(environment_ids)
        for environment in new:
            environment.attach_target(target.id, actor)
        old = []
        for old_id in (i for i in target.environment_ids if i not in environment_ids):
            left = self._find(Environment, old_id)
            if left is not None and not left.is_deleted:
                left.detach_target(target.id, actor)
                old.append(left)
        target.change_environments(environment_ids, actor)
        return [*new, *old]

    def _move_default_pool(
        self, target: DeploymentTarget, pool_id: UUID | None, actor: Actor
    ) -> list[Aggregate]:
        if pool_id == target.default_worker_pool_id:
            return []
        changed: list[Aggregate] = []
        if pool_id is not None:
            pool = self._existing_pool(pool_id)
            pool.attach_target(target.id, actor)
            changed.append(pool)
        if target.default_worker_pool_id is not None:
            old = self._find(WorkerPool, target.default_worker_pool_id)
            if old is not None and not old.is_deleted:
                old.detach_target(target.id, actor)
                changed.append(old)
        target.change_default_pool(pool_id, actor)
        return changed

    @command
    def delete_target(self, target_id: UUID, *, actor: Actor) -> int:
        """Delete a target: it leaves its environments and its default pool and frees its
        name in the same save."""
        target = self.get_target(target_id)
        to_save: list[Aggregate] = []
        for environment_id in target.environment_ids:
            environment = self._find(Environment, environment_id)
            if environment is not None:
                environment.detach_target(target.id, actor)
                to_save.append(environment)
        if target.default_worker_pool_id is not None:
            pool = self._find(WorkerPool, target.default_worker_pool_id)
            if pool is not None:
                pool.detach_target(target.id, actor)
                to_save.append(pool)
        index = self._release_name(TARGET, target.name, actor)
        target.delete(actor)
        return self._save(target, index, *to_save)
