"""Commands on the server configuration."""

from __future__ import annotations

import time

from domain.actors import SYSTEM, Actor
from domain.app.base import CommandsBase, Saved, command
from domain.configuration import CONFIGURATION_ID, Configuration, Smtp

NONE_REMEMBERED_S = 1.0


class ConfigurationCommands(CommandsBase):
    """The built-in worker switch and user, and the mail server."""

    # Until someone changes it, there is no configuration in the store, and asking the
    # store that on every step routed is what dominated routing; so "none yet" is
    # remembered briefly (a change on this node forgets it at once).
    _none_until: float = 0.0
    _saves: int = 0  # so a lookup that raced a save does not remember "none"

    def configuration(self) -> Configuration:
        """The current configuration (defaults until first changed)."""
        if time.monotonic() >= self._none_until:
            saves = self._saves
            found = self._find(Configuration, CONFIGURATION_ID)
            if found is not None:
                return found
            if saves == self._saves:
                self._none_until = time.monotonic() + NONE_REMEMBERED_S
        return Configuration(actor=SYSTEM)

    def _configuration_for_change(self, actor: Actor) -> Configuration:
        found = self._find(Configuration, CONFIGURATION_ID)
        return found if found is not None else Configuration(actor=actor)

    def _save_configuration(self, config: Configuration) -> int:
        # A first "change" that changes nothing must not create the configuration: its
        # only pending event would be Created, and the audit log would show a change.
        if config.version == 1 and len(config.pending_events) == 1:
            return self.last_position
        position = self._save(config)
        self._saves += 1
        self._none_until = 0.0
        return position

    @command
    def configure_built_in_worker(
        self, *, enabled: bool | None = None, run_as_user: str | None = None,
        clear_run_as_user: bool = False, actor: Actor,
    ) -> Saved[Configuration]:
        """Switch the built-in worker on or off, choose (or clear) its OS user."""
        config = self._configuration_for_change(actor)
        user = None if clear_run_as_user else (run_as_user or config.run_as_user)
        config.configure_built_in_worker(
            enabled if enabled is not None else config.built_in_enabled, user, actor
        )
        return Saved(config, self._save_configuration(config))

    @command
    def configure_smtp(self, *, smtp: Smtp | None, actor: Actor) -> Saved[Configuration]:
        """Set or clear the mail server used by email steps."""
        config = self._configuration_for_change(actor)
        config.configure_smtp(smtp, actor)
        return Saved(config, self._save_configuration(config))

