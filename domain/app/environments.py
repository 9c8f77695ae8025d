"""Commands on environments."""

from __future__ import annotations

from uuid import UUID

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.environments import Environment
from domain.errors import Conflict, NotFound
from domain.rules import clean_description, clean_name

ENVIRONMENT = "environment"


class EnvironmentCommands(CommandsBase):
    """Create, change and delete environments (unique names)."""

    def get_environment(self, environment_id: UUID) -> Environment:
        """One environment by id, or NotFound."""
        return self._get(Environment, environment_id, "environment")

    def resolve_environment(self, name_or_id: str) -> Environment:
        """An environment named by its id or its name (ids win when both could match)."""
        try:
            return self.get_environment(UUID(name_or_id))
        except (ValueError, NotFound):
            pass
        owner = self.owner_of(ENVIRONMENT, name_or_id)
        if owner is None:
            raise NotFound(f"environment {name_or_id!r} not found")
        return self.get_environment(owner)

    @command
    def create_environment(
        self, *, name: str, description: str = "", actor: Actor
    ) -> Saved[Environment]:
        """A new environment; 409 when the name is taken."""
        environment = Environment(
            name=clean_name(name, "environment name"),
            description=clean_description(description),
            actor=actor,
        )
        index = self._reserve_name(ENVIRONMENT, environment.name, environment.id, actor)
        return Saved(environment, self._save(index, environment))

    @command
    def update_environment(
        self,
        environment_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        actor: Actor,
    ) -> Saved[Environment]:
        """Rename or describe an environment; fields left as None stay as they are."""
        environment = self.get_environment(environment_id)
        indexes = []
        if name is not None:
            name = clean_name(name, "environment name")
            indexes = self._rename(ENVIRONMENT, environment.name, name, environment.id, actor)
            environment.rename(name, actor)
        if description is not None:
            environment.describe(clean_description(description), actor)
        return Saved(environment, self._save(environment, *indexes))

    @command
    def delete_environment(self, environment_id: UUID, *, actor: Actor) -> int:
        """Delete an environment no target is in, and free its name."""
        environment = self.get_environment(environment_id)
        if environment.target_ids:
            raise Conflict(
                f"environment {environment.name!r} is used by target(s) "
                f"{self._names_of(environment.target_ids)}; remove it from them first"
            )
        environment.delete(actor)
        index = self._release_name(ENVIRONMENT, environment.name, actor)
        return self._save(environment, index)
