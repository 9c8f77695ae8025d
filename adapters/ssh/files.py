"""Files to and from an SSH worker's step folder, over SFTP: packages in, artifacts out.

Packages are placed exactly as on an agent (``agent.packages.place``: archives checked and
extracted, or the file copied) into a local staging folder, and that is uploaded; so an
archive that would escape its folder is refused before anything reaches the worker.
Artifacts get the checks the local collector makes (name, count, size, regular file).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import asyncssh

from agent.artifacts import ArtifactNotReturned, hand_over
from agent.packages import PackageCache, PackageError, fetch_cached, place
from agent.ports import Artifact, ArtifactSink, PackageFile
from domain.artifacts import MAX_ARTIFACT_BYTES, name_problem

__all__ = ["fetch_artifacts", "upload_packages"]


async def upload_packages(
    sftp: asyncssh.SFTPClient, cache: PackageCache | None, packages: Iterable[PackageFile],
    folder: str, staging_root: Path, placed: list[str],
) -> None:
    """Place each package into the remote ``folder``; one log line per package goes to
    ``placed``. PackageError (naming the package) at the first that cannot be placed."""
    staging = Path(tempfile.mkdtemp(prefix="ssh-packages-", dir=_existing(staging_root)))
    try:
        for package in packages:
            label, cached = await fetch_cached(cache, package)
            written = await asyncio.to_thread(place, package, cached, staging)
            local = staging / written.rstrip("/")
            try:
                await sftp.put(str(local), f"{folder}/{written.rstrip('/')}", recurse=True, preserve=True)
            except (OSError, asyncssh.Error) as exc:
                raise PackageError(f"{label}: could not upload it: {exc}") from None
            placed.append(f"{label} is in {written}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def fetch_artifacts(
    sftp: asyncssh.SFTPClient, folder: str, staging_root: Path, sink: ArtifactSink,
    note: Callable[[str], Awaitable[None]],
) -> list[str]:
    """Hand every file in the remote ``folder/.shoal/artifacts`` to ``sink``, in name order;
    ``note`` gets one log line per artifact. Returns why each one not returned was not."""
    source = f"{folder}/.shoal/artifacts"
    names = sorted(n for n in await sftp.listdir(source) if n not in (".", ".."))

    async def stage(name: str, slot: Path) -> Artifact:
        return await _fetch(sftp, f"{source}/{name}", name, slot / "artifact")

    return await hand_over(names, stage, staging_root, sink, note)


async def _fetch(sftp: asyncssh.SFTPClient, remote: str, name: str, local: Path) -> Artifact:
    problem = name_problem(name)
    if problem is not None:
        raise ArtifactNotReturned(f"its name is refused: {problem}")
    try:
        attrs = await sftp.lstat(remote)
        if attrs.permissions is None or not stat.S_ISREG(attrs.permissions):
            raise ArtifactNotReturned("it is not a regular file")
        if attrs.nlink is not None and attrs.nlink != 1:
            raise ArtifactNotReturned("it has other hard links")
        if (attrs.size or 0) > MAX_ARTIFACT_BYTES:
            raise ArtifactNotReturned(f"it is larger than {MAX_ARTIFACT_BYTES} bytes")
        await sftp.get(remote, str(local))
    except (OSError, asyncssh.SFTPError) as exc:
        raise ArtifactNotReturned(f"cannot fetch it: {exc}") from None
    digest, size = await asyncio.to_thread(_digest, local)
    if size > MAX_ARTIFACT_BYTES:
        raise ArtifactNotReturned(f"it is larger than {MAX_ARTIFACT_BYTES} bytes")
    return Artifact(name=name, path=local, size=size, sha256=digest)


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            size += len(chunk)
            digest.update(chunk)
    return digest.hexdigest(), size


def _existing(root: Path) -> str | None:
    """``root`` when it is a folder (the step's work root), else the system's temp folder."""
    return str(root) if root.is_dir() else None
