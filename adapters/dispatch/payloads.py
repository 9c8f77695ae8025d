"""What a script step carries besides its script, on the server's side: the packages it
lists (resolved to their hashes before the step is sent anywhere) and the artifacts the
built-in worker returns (stored in the artifacts bucket, then recorded on the task)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from adapters.nats.objects import ObjectFiles, artifact_object
from agent.artifacts import ArtifactNotReturned
from agent.ports import Artifact, ArtifactSink
from domain.actors import Actor
from domain.app import Shoal
from domain.errors import InvalidTransition, NotFound
from domain.messages import PackageRef
from domain.process import Step


class UnknownPackage(Exception):
    """A step lists a package that was never pushed (the message names it)."""


async def resolve_packages(app: Shoal, step: Step) -> tuple[PackageRef, ...]:
    """The step's packages with their hashes; UnknownPackage for one never pushed."""
    if not step.packages:
        return ()
    try:
        return await asyncio.to_thread(app.resolve_packages, step.packages)
    except NotFound as exc:
        raise UnknownPackage(str(exc)) from None


def built_in_artifacts(
    app: Shoal, store: ObjectFiles | None, task_id: UUID, step: str, actor: Actor
) -> ArtifactSink:
    """The artifact sink of a step on the built-in worker."""

    async def store_one(artifact: Artifact) -> None:
        if store is None:
            raise ArtifactNotReturned("this server has no artifact store")
        try:
            await store.put_file(artifact_object(str(task_id), step, artifact.name), artifact.path)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ArtifactNotReturned(f"could not store it: {exc!r}") from None
        try:
            await asyncio.to_thread(
                app.store_artifact, task_id, step, artifact.name, artifact.size, artifact.sha256,
                actor=actor,
            )
        except InvalidTransition as exc:
            raise ArtifactNotReturned(str(exc)) from None

    return store_one
