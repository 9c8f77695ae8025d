"""Artifacts: files a step returns with ``shoal-artifact PATH [NAME]``.

Every step folder gets a hidden ``.shoal/`` with the ``shoal-artifact`` command (first on
the script's PATH) and the folder it copies files into (``$SHOAL_ARTIFACTS_DIR``). Once
the step's processes are gone, :func:`collect` checks what is there (names, count, size,
regular files only, links not followed), copies each into a private staging folder and
hands it to the runner's artifact sink; the caller removes the step folder afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.ports import Artifact, ArtifactSink
from domain.artifacts import MAX_ARTIFACT_BYTES, MAX_ARTIFACTS_PER_STEP, name_problem

TOOL_NAME = "shoal-artifact"
_CHUNK = 1024 * 1024

# The tool is a file of this package (POSIX sh, so it runs for whichever user the step runs
# as; the names it refuses are the ones domain.artifacts.name_problem refuses, checked again
# on collection). A step run as this process's own user finds it there, on its PATH: a
# file and a folder fewer to create for every step, which matters where each new inode
# costs the better part of a millisecond (virtual disks). A step run as another user, who
# may not be able to reach this package, gets its own copy in its folder.
SHARED_TOOLS_DIR = Path(__file__).resolve().with_name("tools")
TOOL_SCRIPT = (SHARED_TOOLS_DIR / TOOL_NAME).read_text(encoding="utf-8")


class ArtifactNotReturned(Exception):
    """Raised by an artifact sink when it could not take one artifact (the message says
    why); the step is then failed, the other artifacts are still returned."""


def prepare(folder: Path, owner: tuple[int, int] | None) -> dict[str, str]:
    """Give the step ``shoal-artifact`` (for a step run as another user, a copy in its
    folder); returns the environment the script needs (``SHOAL_TOOLS_DIR``, which goes
    first on ``PATH``, and ``SHOAL_ARTIFACTS_DIR``). The artifacts folder itself is made
    by the tool on first use, as the step's user: most steps return nothing, and each
    folder made here costs a step the better part of a millisecond on a virtual disk."""
    hidden = folder / ".shoal"
    out_dir = hidden / "artifacts"
    if owner is None and _SHARED_TOOL:
        return {"SHOAL_ARTIFACTS_DIR": str(out_dir), "SHOAL_TOOLS_DIR": str(SHARED_TOOLS_DIR)}
    bin_dir = hidden / "bin"
    hidden.mkdir(mode=0o700)
    bin_dir.mkdir(mode=0o700)
    tool = bin_dir / TOOL_NAME
    fd = os.open(tool, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o500)
    with os.fdopen(fd, "w") as f:
        f.write(TOOL_SCRIPT)
    if owner is not None:
        for path in (hidden, bin_dir, tool):
            os.chown(path, *owner)
    return {"SHOAL_ARTIFACTS_DIR": str(out_dir), "SHOAL_TOOLS_DIR": str(bin_dir)}


# Checked once: an installation that lost the file's executable mode makes every step
# carry its own copy, as before.
_SHARED_TOOL = os.access(SHARED_TOOLS_DIR / TOOL_NAME, os.R_OK | os.X_OK)


def artifacts_dir(folder: Path) -> Path:
    """Where ``shoal-artifact`` puts files in a step folder."""
    return folder / ".shoal" / "artifacts"


async def collect(
    folder: Path, staging_root: Path, sink: ArtifactSink, note: Callable[[str], Awaitable[None]]
) -> list[str]:
    """Hand every artifact the step left to ``sink``, in name order; ``note`` gets one
    log line per artifact. Returns why each artifact that was not returned was not."""
    source = artifacts_dir(folder)
    try:
        names = sorted(os.listdir(source))
    except FileNotFoundError:
        return []

    async def stage(name: str, staging: Path) -> Artifact:
        return await asyncio.to_thread(_stage, source, name, staging)

    return await hand_over(names, stage, staging_root, sink, note)


Stager = Callable[[str, Path], Awaitable[Artifact]]
"""Checks the artifact ``name`` and copies it into the given staging folder."""


async def hand_over(
    names: list[str], stage: Stager, staging_root: Path, sink: ArtifactSink,
    note: Callable[[str], Awaitable[None]],
) -> list[str]:
    """Stage each of ``names`` (at most MAX_ARTIFACTS_PER_STEP) and give it to ``sink``,
    noting each in the log; returns why each one not returned was not. Shared by the
    local executor and the SSH runner (which stages over SFTP)."""
    if not names:
        return []  # the common case: no staging folder to make and remove
    problems: list[str] = []
    if len(names) > MAX_ARTIFACTS_PER_STEP:
        problems.append(f"the step left {len(names)} artifacts; only the first "
                        f"{MAX_ARTIFACTS_PER_STEP} are returned")
        await note(f"artifacts: {problems[-1]}")
        names = names[:MAX_ARTIFACTS_PER_STEP]
    os.makedirs(staging_root, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="artifacts-", dir=staging_root))
    try:
        for index, name in enumerate(names):
            try:
                slot = staging / str(index)
                slot.mkdir()
                artifact = await stage(name, slot)
                await sink(artifact)
            except ArtifactNotReturned as exc:
                problems.append(f"artifact {name!r} not returned: {exc}")
                await note(problems[-1])
                continue
            await note(f"artifact {name!r} returned ({artifact.size} bytes, SHA-256 {artifact.sha256})")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return problems


def _stage(source: Path, name: str, staging: Path) -> Artifact:
    """Check one artifact and copy it to ``staging`` (read through a descriptor opened
    without following links, so a step cannot return a file only the worker may read)."""
    problem = name_problem(name)
    if problem is not None:
        raise ArtifactNotReturned(f"its name is refused: {problem}")
    try:
        fd = os.open(source / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ArtifactNotReturned(f"cannot open it: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactNotReturned("it is not a regular file")
        if st.st_nlink != 1:
            raise ArtifactNotReturned("it has other hard links")
        if st.st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactNotReturned(f"it is larger than {MAX_ARTIFACT_BYTES} bytes")
        copy = staging / f"{len(os.listdir(staging))}"
        digest = hashlib.sha256()
        size = 0
        with copy.open("wb") as out:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    raise ArtifactNotReturned(f"it is larger than {MAX_ARTIFACT_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    return Artifact(name=name, path=copy, size=size, sha256=digest.hexdigest())
