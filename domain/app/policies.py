"""Commands on machine policies."""

from __future__ import annotations

from uuid import UUID

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.errors import NotFound
from domain.installation import INSTALLATION_ID, Installation
from domain.policies import (
    DEFAULT_HEALTH_SCRIPT,
    CleanUp,
    Connectivity,
    MachinePolicy,
    check_policy_values,
)
from domain.rules import clean_description, clean_name

POLICY = "policy"
DEFAULT_INTERVAL_S = 3600


class PolicyCommands(CommandsBase):
    """Create and change machine policies."""

    def get_policy(self, policy_id: UUID) -> MachinePolicy:
        """One policy by id, or NotFound."""
        return self._get(MachinePolicy, policy_id, "machine policy")

    def resolve_policy(self, name_or_id: str) -> MachinePolicy:
        """A policy named by its id or its name."""
        try:
            return self.get_policy(UUID(name_or_id))
        except (ValueError, NotFound):
            pass
        owner = self.owner_of(POLICY, name_or_id)
        if owner is None:
            raise NotFound(f"machine policy {name_or_id!r} not found")
        return self.get_policy(owner)

    def default_policy_id(self) -> UUID:
        """The policy a worker gets when none is named."""
        return self._get(Installation, INSTALLATION_ID, "installation").default_policy_id

    def _new_policy(
        self,
        *,
        name: str,
        description: str,
        health_check_interval_s: int,
        health_check_script: str,
        connectivity: Connectivity,
        cleanup: CleanUp,
        cleanup_after_s: int | None,
        actor: Actor,
    ) -> MachinePolicy:
        check_policy_values(health_check_interval_s, health_check_script, cleanup_after_s, cleanup)
        return MachinePolicy(
            name=clean_name(name, "policy name"),
            description=clean_description(description),
            health_check_interval_s=health_check_interval_s,
            health_check_script=health_check_script,
            connectivity=connectivity,
            cleanup=cleanup,
            cleanup_after_s=cleanup_after_s,
            actor=actor,
        )

    @command
    def create_policy(
        self,
        *,
        name: str,
        description: str = "",
        health_check_interval_s: int = DEFAULT_INTERVAL_S,
        health_check_script: str = DEFAULT_HEALTH_SCRIPT,
        connectivity: Connectivity = Connectivity.EXPECTED_ONLINE,
        cleanup: CleanUp = CleanUp.KEEP,
        cleanup_after_s: int | None = None,
        actor: Actor,
    ) -> Saved[MachinePolicy]:
        """A new machine policy with a unique name."""
        policy = self._new_policy(
            name=name,
            description=description,
            health_check_interval_s=health_check_interval_s,
            health_check_script=health_check_script,
            connectivity=connectivity,
            cleanup=cleanup,
            cleanup_after_s=cleanup_after_s,
            actor=actor,
        )
        index = self._reserve_name(POLICY, policy.name, policy.id, actor)
        return Saved(policy, self._save(index, policy))

    @command
    def update_policy(
        self,
        policy_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        health_check_interval_s: int | None = None,
        health_check_script: str | None = None,
        connectivity: Connectivity | None = None,
        cleanup: CleanUp | None = None,
        cleanup_after_s: int | None = None,
        actor: Actor,
    ) -> Saved[MachinePolicy]:
        """Change any of a policy's fields; fields left as None stay as they are."""
        policy = self.get_policy(policy_id)
        indexes = []
        if name is not None:
            name = clean_name(name, "policy name")
            indexes = self._rename(POLICY, policy.name, name, policy.id, actor)
            policy.rename(name, actor)
        policy.update(
            description=clean_description(
                description if description is not None else policy.description
            ),
            health_check_interval_s=(
                health_check_interval_s
                if health_check_interval_s is not None
                else policy.health_check_interval_s
            ),
            health_check_script=(
                health_check_script
                if health_check_script is not None
                else policy.health_check_script
            ),
            connectivity=connectivity if connectivity is not None else policy.connectivity,
            cleanup=cleanup if cleanup is not None else policy.cleanup,
            cleanup_after_s=cleanup_after_s if cleanup_after_s is not None else policy.cleanup_after_s,
            actor=actor,
        )
        return Saved(policy, self._save(policy, *indexes))
