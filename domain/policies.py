"""Machine policies: how often workers are health-checked, with what, and what then."""

from __future__ import annotations

from enum import Enum

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.codec import register_enum
from domain.errors import Rejected

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


def check_policy_values(
    health_check_interval_s: int,
    health_check_script: str,
    cleanup_after_s: int | None,
    cleanup: CleanUp,
) -> None:
    """Reject values a policy cannot run with."""
    if not MIN_INTERVAL_S <= health_check_interval_s <= MAX_INTERVAL_S:
        raise Rejected(
            f"health_check_interval_s must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S}"
        )
    if not health_check_script.strip():
        raise Rejected("health_check_script must not be empty")
    if len(health_check_script.encode()) > MAX_SCRIPT_BYTES:
        raise Rejected(f"health_check_script must be at most {MAX_SCRIPT_BYTES} bytes")
    if cleanup is CleanUp.DELETE_UNAVAILABLE and (cleanup_after_s is None or cleanup_after_s < 60):
        raise Rejected("cleanup delete_unavailable needs cleanup_after_s of at least 60")


class MachinePolicy(ShoalAggregate):
    """A machine policy."""

    class Created(ShoalAggregate.Created):
        name: str
        description: str
        health_check_interval_s: int
        health_check_script: str
        connectivity: Connectivity
        cleanup: CleanUp
        cleanup_after_s: int | None

    class Renamed(ShoalAggregate.Event):
        name: str

    class Updated(ShoalAggregate.Event):
        description: str
        health_check_interval_s: int
        health_check_script: str
        connectivity: Connectivity
        cleanup: CleanUp
        cleanup_after_s: int | None

    @event(Created)
    def __init__(
        self,
        name: str,
        description: str,
        health_check_interval_s: int,
        health_check_script: str,
        connectivity: Connectivity,
        cleanup: CleanUp,
        cleanup_after_s: int | None,
        actor: Actor,
    ) -> None:
        self.name = name
        self.description = description
        self.health_check_interval_s = health_check_interval_s
        self.health_check_script = health_check_script
        self.connectivity = connectivity
        self.cleanup = cleanup
        self.cleanup_after_s = cleanup_after_s
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """New name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def update(
        self,
        description: str,
        health_check_interval_s: int,
        health_check_script: str,
        connectivity: Connectivity,
        cleanup: CleanUp,
        cleanup_after_s: int | None,
        actor: Actor,
    ) -> None:
        """Change the policy's settings; records nothing when nothing changes."""
        check_policy_values(health_check_interval_s, health_check_script, cleanup_after_s, cleanup)
        new = (description, health_check_interval_s, health_check_script, connectivity, cleanup,
               cleanup_after_s)
        old = (self.description, self.health_check_interval_s, self.health_check_script,
               self.connectivity, self.cleanup, self.cleanup_after_s)
        if new != old:
            self._update(
                description=description,
                health_check_interval_s=health_check_interval_s,
                health_check_script=health_check_script,
                connectivity=connectivity,
                cleanup=cleanup,
                cleanup_after_s=cleanup_after_s,
                actor=actor,
            )

    @event(Updated)
    def _update(
        self,
        description: str,
        health_check_interval_s: int,
        health_check_script: str,
        connectivity: Connectivity,
        cleanup: CleanUp,
        cleanup_after_s: int | None,
        actor: Actor,
    ) -> None:
        self.description = description
        self.health_check_interval_s = health_check_interval_s
        self.health_check_script = health_check_script
        self.connectivity = connectivity
        self.cleanup = cleanup
        self.cleanup_after_s = cleanup_after_s
