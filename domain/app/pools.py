"""Commands on worker pools."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.errors import Conflict, NotFound
from domain.installation import INSTALLATION_ID, Installation
from domain.pools import WorkerPool
from domain.rules import check_sort_order, clean_description, clean_name

POOL = "pool"


class PoolCommands(CommandsBase):
    """Create, change and delete pools; move the default flag."""

    def get_pool(self, pool_id: UUID) -> WorkerPool:
        """One pool by id, or NotFound."""
        return self._get(WorkerPool, pool_id, "worker pool")

    def resolve_pool(self, name_or_id: str) -> WorkerPool:
        """A pool named by its id or its name (ids win when both could match)."""
        try:
            return self.get_pool(UUID(name_or_id))
        except (ValueError, NotFound):
            pass
        owner = self.owner_of(POOL, name_or_id)
        if owner is None:
            raise NotFound(f"worker pool {name_or_id!r} not found")
        return self.get_pool(owner)

    def default_pool_id(self) -> UUID:
        """The id of the default pool."""
        return self._get(Installation, INSTALLATION_ID, "installation").default_pool_id

    @command
    def create_pool(
        self,
        *,
        name: str,
        description: str = "",
        sort_order: int = 0,
        is_default: bool = False,
        actor: Actor,
    ) -> Saved[WorkerPool]:
        """A new pool; with ``is_default`` the default flag moves to it in the same save."""
        name = clean_name(name, "pool name")
        description = clean_description(description)
        pool = WorkerPool(
            name=name, description=description, sort_order=check_sort_order(sort_order),
            actor=actor,
        )
        index = self._reserve_name(POOL, name, pool.id, actor)
        moved = self._move_default(pool, actor) if is_default else []
        return Saved(pool, self._save(index, pool, *moved))

    @command
    def update_pool(
        self,
        pool_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        sort_order: int | None = None,
        is_default: bool | None = None,
        actor: Actor,
    ) -> Saved[WorkerPool]:
        """Change any of a pool's fields; fields left as None stay as they are."""
        pool = self.get_pool(pool_id)
        to_save: list[Aggregate] = []
        if name is not None:
            name = clean_name(name, "pool name")
            to_save += self._rename(POOL, pool.name, name, pool.id, actor)
            pool.rename(name, actor)
        if description is not None or sort_order is not None:
            pool.change_details(
                clean_description(description if description is not None else pool.description),
                check_sort_order(sort_order) if sort_order is not None else pool.sort_order,
                actor,
            )
        if is_default is True:
            to_save += self._move_default(pool, actor)
        elif is_default is False and pool.is_default:
            raise Conflict(
                "there is always one default pool: make another pool the default instead"
            )
        return Saved(pool, self._save(pool, *to_save))

    @command
    def delete_pool(self, pool_id: UUID, *, actor: Actor) -> int:
        """Delete an empty, non-default pool and free its name."""
        pool = self.get_pool(pool_id)
        if pool.target_ids and not pool.is_default:
            raise Conflict(
                f"pool {pool.name!r} is the default pool of deployment target(s) "
                f"{self._names_of(pool.target_ids)}; change their default pool first"
            )
        pool.delete(actor)
        index = self._release_name(POOL, pool.name, actor)
        return self._save(pool, index)

    def _move_default(self, pool: WorkerPool, actor: Actor) -> list[Aggregate]:
        installation = self._get(Installation, INSTALLATION_ID, "installation")
        if installation.default_pool_id == pool.id:
            return []
        old = self.get_pool(installation.default_pool_id)
        old.clear_default(actor)
        pool.make_default(actor)
        installation.move_default_pool(pool.id, actor)
        return [old, installation]
