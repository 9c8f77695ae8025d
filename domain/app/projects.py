"""Commands on projects and their processes."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from uuid import UUID

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved, command
from domain.app.environments import EnvironmentCommands
from domain.app.pools import PoolCommands
from domain.errors import NotFound, Rejected
from domain.process import Step, check_process, with_current_environments
from domain.projects import Project
from domain.rules import clean_description, clean_name

PROJECT = "project"


class ProjectCommands(EnvironmentCommands, PoolCommands, CommandsBase):
    """Create, change and delete projects; set their process."""

    def get_project(self, project_id: UUID) -> Project:
        """One project by id, or NotFound."""
        return self._get(Project, project_id, "project")

    def resolve_project(self, name_or_id: str) -> Project:
        """A project by id or name."""
        try:
            return self.get_project(UUID(name_or_id))
        except (ValueError, NotFound):
            pass
        owner = self.owner_of(PROJECT, name_or_id)
        if owner is None:
            raise NotFound(f"project {name_or_id!r} not found")
        return self.get_project(owner)

    @command
    def create_project(self, *, name: str, description: str = "", actor: Actor) -> Saved[Project]:
        """A new project with an empty process."""
        project = Project(
            name=clean_name(name, "project name"),
            description=clean_description(description),
            actor=actor,
        )
        index = self._reserve_name(PROJECT, project.name, project.id, actor)
        return Saved(project, self._save(index, project))

    @command
    def update_project(
        self,
        project_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        actor: Actor,
    ) -> Saved[Project]:
        """Rename or describe a project."""
        project = self.get_project(project_id)
        indexes = []
        if name is not None:
            name = clean_name(name, "project name")
            indexes = self._rename(PROJECT, project.name, name, project.id, actor)
            project.rename(name, actor)
        if description is not None:
            project.describe(clean_description(description), actor)
        return Saved(project, self._save(project, *indexes))

    @command
    def delete_project(self, project_id: UUID, *, actor: Actor) -> int:
        """Delete a project and free its name."""
        project = self.get_project(project_id)
        project.delete(actor)
        return self._save(project, self._release_name(PROJECT, project.name, actor))

    def check_steps(self, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        """A process whose steps are valid and whose pools and environments exist (the
        environments a step is scoped to are kept under their current names)."""
        checked = tuple(self._known_environments(s) for s in check_process(steps))
        for step in checked:
            if step.worker_pool_id is not None:
                try:
                    self.get_pool(step.worker_pool_id)
                except NotFound:
                    raise Rejected(
                        f"step {step.name!r}: worker pool {step.worker_pool_id} does not exist"
                    ) from None
        return checked

    def _known_environments(self, step: Step) -> Step:
        found = []
        for name in step.environments:
            try:
                found.append(self.resolve_environment(name))
            except NotFound:
                raise Rejected(
                    f"step {step.name!r}: environment {name!r} does not exist"
                ) from None
        if not found:
            return step
        return replace(step, environments=tuple(e.name for e in found),
                       environment_ids=tuple(e.id for e in found))

    def current_environments(self, step: Step) -> Step:
        """``step`` scoped to its environments under their names now (see
        with_current_environments)."""
        names = {}
        for env_id in step.environment_ids:
            # Deleted: the step keeps the old name, which no run is into.
            with contextlib.suppress(NotFound):
                names[env_id] = self.get_environment(env_id).name
        return with_current_environments(step, names)

    @command
    def set_process(
        self, project_id: UUID, *, steps: tuple[Step, ...], actor: Actor
    ) -> Saved[Project]:
        """Replace a project's process."""
        project = self.get_project(project_id)
        project.change_process(self.check_steps(steps), actor)
        return Saved(project, self._save(project))
