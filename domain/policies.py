"""Machine policies: how often workers are health-checked, with what, and what then."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.codec import register_enum, register_record
from domain.errors import Rejected
from domain.rules import check_duration, clean_description

DEFAULT_POLICY_NAME = "Default Machine Policy"

# Disk space is what the product checks by default: warn under 10%, fail under 2%.
DEFAULT_HEALTH_SCRIPT = """\
free_pct=$(df -P . | awk 'NR==2 {gsub("%","",$5); print 100-$5}')
if [ "$free_pct" -lt 2 ]; then
  fail_healthcheck "only ${free_pct}% disk space free"
elif [ "$free_pct" -lt 10 ]; then
  warn_healthcheck "only ${free_pct}% disk space free"
fi
echo "disk space free: ${free_pct}%"
"""

DEFAULT_INTERVAL_S = 3600
MIN_INTERVAL_S = 10
MAX_INTERVAL_S = 7 * 24 * 3600
MAX_SCRIPT_BYTES = 64 * 1024


@register_enum
class Connectivity(str, Enum):
    """Whether a worker that cannot be reached counts as unhealthy."""

    EXPECTED_ONLINE = "expected_online"
    MAY_BE_OFFLINE = "may_be_offline"


@register_enum
class CleanUp(str, Enum):
    """What happens to workers that stay unavailable."""

    KEEP = "keep"
    DELETE_UNAVAILABLE = "delete_unavailable"


@register_record
@dataclass(frozen=True)
class PolicySettings:
    """Everything a policy says besides its name; changed as a whole."""

    description: str = ""
    health_check_interval_s: int = DEFAULT_INTERVAL_S
    health_check_script: str = DEFAULT_HEALTH_SCRIPT
    connectivity: Connectivity = Connectivity.EXPECTED_ONLINE
    cleanup: CleanUp = CleanUp.KEEP
    cleanup_after_s: int | None = None


def check_policy_values(settings: PolicySettings) -> PolicySettings:
    """Reject settings a policy cannot run with."""
    if not MIN_INTERVAL_S <= settings.health_check_interval_s <= MAX_INTERVAL_S:
        raise Rejected(
            f"health_check_interval_s must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S}"
        )
    if not settings.health_check_script.strip():
        raise Rejected("health_check_script must not be empty")
    if len(settings.health_check_script.encode()) > MAX_SCRIPT_BYTES:
        raise Rejected(f"health_check_script must be at most {MAX_SCRIPT_BYTES} bytes")
    if settings.cleanup is CleanUp.DELETE_UNAVAILABLE and (
        settings.cleanup_after_s is None or settings.cleanup_after_s < 60
    ):
        raise Rejected("cleanup delete_unavailable needs cleanup_after_s of at least 60")
    if settings.cleanup_after_s is not None:
        check_duration(settings.cleanup_after_s, "cleanup_after_s")
    clean_description(settings.description)
    return settings


class MachinePolicy(ShoalAggregate):
    """A machine policy."""

    class Created(ShoalAggregate.Created):
        name: str
        settings: PolicySettings

    class Renamed(ShoalAggregate.Event):
        name: str

    class Updated(ShoalAggregate.Event):
        settings: PolicySettings

    @event(Created)
    def __init__(self, name: str, settings: PolicySettings, actor: Actor) -> None:
        self.name = name
        self.settings = settings
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """New name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def update(self, settings: PolicySettings, actor: Actor) -> None:
        """Change the policy's settings; records nothing when nothing changes."""
        check_policy_values(settings)
        if settings != self.settings:
            self._update(settings=settings, actor=actor)

    @event(Updated)
    def _update(self, settings: PolicySettings, actor: Actor) -> None:
        self.settings = settings

    # Read-only views of the settings, for callers that want one field.
    description = property(lambda self: self.settings.description)
    health_check_interval_s = property(lambda self: self.settings.health_check_interval_s)
    health_check_script = property(lambda self: self.settings.health_check_script)
    connectivity = property(lambda self: self.settings.connectivity)
    cleanup = property(lambda self: self.settings.cleanup)
    cleanup_after_s = property(lambda self: self.settings.cleanup_after_s)
