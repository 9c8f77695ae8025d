"""Commands on machine policies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.errors import NotFound, Rejected
from domain.installation import INSTALLATION_ID, Installation
from domain.policies import DEFAULT_INTERVAL_S, MachinePolicy, PolicySettings, check_policy_values
from domain.rules import clean_name

POLICY = "policy"

__all__ = ["DEFAULT_INTERVAL_S", "POLICY", "PolicyCommands"]


def _settings(base: PolicySettings, changes: dict[str, Any]) -> PolicySettings:
    """``base`` with the given fields changed (None means unchanged)."""
    try:
        return replace(base, **{k: v for k, v in changes.items() if v is not None})
    except TypeError as exc:  # an unknown field name
        raise Rejected(str(exc)) from None


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

    def _new_policy(self, name: str, settings: PolicySettings, actor: Actor) -> MachinePolicy:
        return MachinePolicy(
            name=clean_name(name, "policy name"), settings=check_policy_values(settings),
            actor=actor,
        )

    @command
    def create_policy(self, *, name: str, actor: Actor, **settings: Any) -> Saved[MachinePolicy]:
        """A new machine policy with a unique name; ``settings`` are PolicySettings
        fields (description, health_check_interval_s, health_check_script, connectivity,
        cleanup, cleanup_after_s), defaults for the rest."""
        policy = self._new_policy(name, _settings(PolicySettings(), settings), actor)
        index = self._reserve_name(POLICY, policy.name, policy.id, actor)
        return Saved(policy, self._save(index, policy))

    @command
    def update_policy(
        self, policy_id: UUID, *, name: str | None = None, actor: Actor, **changes: Any
    ) -> Saved[MachinePolicy]:
        """Change the name or any settings; fields left as None stay as they are."""
        policy = self.get_policy(policy_id)
        indexes = []
        if name is not None:
            name = clean_name(name, "policy name")
            indexes = self._rename(POLICY, policy.name, name, policy.id, actor)
            policy.rename(name, actor)
        policy.update(_settings(policy.settings, changes), actor)
        return Saved(policy, self._save(policy, *indexes))
