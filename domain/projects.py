"""Projects: a named deployment process."""

from __future__ import annotations

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.process import Step


class Project(ShoalAggregate):
    """A project and its current process (a task keeps a copy of the process it ran)."""

    class Created(ShoalAggregate.Created):
        name: str
        description: str

    class Renamed(ShoalAggregate.Event):
        name: str

    class Described(ShoalAggregate.Event):
        description: str

    class ProcessChanged(ShoalAggregate.Event):
        steps: tuple[Step, ...]

    class Deleted(ShoalAggregate.Deleted):
        pass

    @event(Created)
    def __init__(self, name: str, description: str, actor: Actor) -> None:
        self.name = name
        self.description = description
        self.steps: tuple[Step, ...] = ()
        self.is_deleted = False

    def rename(self, name: str, actor: Actor) -> None:
        """New name (uniqueness is the caller's index check)."""
        if name != self.name:
            self._rename(name=name, actor=actor)

    @event(Renamed)
    def _rename(self, name: str, actor: Actor) -> None:
        self.name = name

    def describe(self, description: str, actor: Actor) -> None:
        """New description."""
        if description != self.description:
            self._describe(description=description, actor=actor)

    @event(Described)
    def _describe(self, description: str, actor: Actor) -> None:
        self.description = description

    def change_process(self, steps: tuple[Step, ...], actor: Actor) -> None:
        """Replace the process (steps already checked by the caller)."""
        if steps != self.steps:
            self._change_process(steps=steps, actor=actor)

    @event(ProcessChanged)
    def _change_process(self, steps: tuple[Step, ...], actor: Actor) -> None:
        self.steps = steps

    def delete(self, actor: Actor) -> None:
        """Delete the project (its tasks stay in the log)."""
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: Actor) -> None:
        self.is_deleted = True
