"""Server-wide settings changed at run time: the built-in worker and outgoing mail."""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.codec import register_record
from domain.errors import Rejected

CONFIGURATION_ID = uuid5(NAMESPACE_URL, "https://shoal.dev/configuration")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


@register_record
@dataclass(frozen=True)
class Smtp:
    """Where email steps send mail. The password is a secret: redacted in the audit log."""

    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False


def check_run_as_user(user: str | None) -> str | None:
    """An OS user name as Debian accepts it, or None for the server's own user."""
    if user is None or user == "":
        return None
    if not _USER_NAME.match(user):
        raise Rejected(f"{user!r} is not a valid user name")
    return user


def check_smtp(smtp: Smtp) -> Smtp:
    """Reject settings that cannot work."""
    if not smtp.host.strip():
        raise Rejected("smtp host must not be empty")
    if not 1 <= smtp.port <= 65535:
        raise Rejected("smtp port must be 1-65535")
    if "@" not in smtp.sender:
        raise Rejected(f"{smtp.sender!r} is not an email address")
    return smtp


class Configuration(ShoalAggregate):
    """A singleton created on first change; until then the defaults apply."""

    class Created(ShoalAggregate.Created):
        pass

    class BuiltInWorkerConfigured(ShoalAggregate.Event):
        enabled: bool
        run_as_user: str | None

    class SmtpConfigured(ShoalAggregate.Event):
        smtp: Smtp | None

    @staticmethod
    def create_id(actor: Actor) -> UUID:
        """Always the same id."""
        return CONFIGURATION_ID

    @event(Created)
    def __init__(self, actor: Actor) -> None:
        self.built_in_enabled = True
        self.run_as_user: str | None = None
        self.smtp: Smtp | None = None

    def configure_built_in_worker(self, enabled: bool, run_as_user: str | None, actor: Actor) -> None:
        """Turn the built-in worker on or off and choose the OS user it runs steps as."""
        user = check_run_as_user(run_as_user)
        if (enabled, user) != (self.built_in_enabled, self.run_as_user):
            self._built_in(enabled=enabled, run_as_user=user, actor=actor)

    @event(BuiltInWorkerConfigured)
    def _built_in(self, enabled: bool, run_as_user: str | None, actor: Actor) -> None:
        self.built_in_enabled = enabled
        self.run_as_user = run_as_user

    def configure_smtp(self, smtp: Smtp | None, actor: Actor) -> None:
        """Set (or clear) the mail server."""
        if smtp is not None:
            check_smtp(smtp)
        if smtp != self.smtp:
            self._smtp(smtp=smtp, actor=actor)

    @event(SmtpConfigured)
    def _smtp(self, smtp: Smtp | None, actor: Actor) -> None:
        self.smtp = smtp
