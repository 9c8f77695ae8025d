"""Commands on the server configuration."""

from __future__ import annotations

from domain.actors import SYSTEM, Actor
from domain.app.base import CommandsBase, Saved, command
from domain.configuration import CONFIGURATION_ID, Configuration, Smtp


class ConfigurationCommands(CommandsBase):
    """The built-in worker switch and user, and the mail server."""

    def configuration(self) -> Configuration:
        """The current configuration (defaults until first changed)."""
        found = self._find(Configuration, CONFIGURATION_ID)
        return found if found is not None else Configuration(actor=SYSTEM)

    def _configuration_for_change(self, actor: Actor) -> Configuration:
        found = self._find(Configuration, CONFIGURATION_ID)
        return found if found is not None else Configuration(actor=actor)

    def _save_configuration(self, config: Configuration) -> int:
        # A first "change" that changes nothing must not create the configuration: its
        # only pending event would be Created, and the audit log would show a change.
        if config.version == 1 and len(config.pending_events) == 1:
            return self.last_position
        return self._save(config)

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

