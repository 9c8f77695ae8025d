"""Packages in a step's working folder: fetched once per worker and cached by hash, then
copied or extracted into each step folder that needs them.

The built-in worker and the agents both use this module (through the step executor), so
a package arrives the same way everywhere:

* an archive (``.zip``, ``.tar.gz``, ``.tgz``) is extracted into a folder named after the
  package id; anything else is copied as the file name it was pushed with;
* an archive is refused as a whole, before anything is written, when any member has an
  absolute path or a ``..`` component, or is a link that could lead out of the folder (a
  symlink whose target is absolute or holds ``..``, a hard link to a name that is not
  itself a plain member path), or is a device or fifo.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from agent.ports import PackageFile, PackageSource
from domain.artifacts import is_sha256
from domain.errors import Rejected
from domain.packages import check_file_name, check_package_id, is_archive

MAX_MEMBERS = 100_000
MAX_EXTRACTED_BYTES = 8 * 1024 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class PackageError(Exception):
    """A package cannot be placed; the message names the package (and member) and says why."""


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, in lower-case hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class PackageCache:
    """Package files under ``root``, one per SHA-256, fetched from ``source`` when missing.

    A download goes to a temporary name, is checked against its hash and then renamed,
    so the cache never holds a partial or wrong file; a file present is trusted."""

    def __init__(self, root: Path, source: PackageSource) -> None:
        self.root = root
        self._source = source
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, sha256: str) -> Path:
        """The cached file of ``sha256``, fetched first if needed; PackageError when it
        cannot be had or its bytes do not match."""
        if not is_sha256(sha256):
            raise PackageError(f"{sha256!r} is not a SHA-256")
        path = self.root / sha256
        if path.is_file():
            return path
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if path.is_file():
                return path
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = self.root / f".{sha256}.{uuid.uuid4().hex}.part"
            try:
                try:
                    await self._source.fetch(sha256, partial)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise PackageError(f"could not fetch it: {exc}") from exc
                got = await asyncio.to_thread(file_sha256, partial)
                if got != sha256:
                    raise PackageError(f"the bytes fetched have SHA-256 {got}, not {sha256}")
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
                self._locks.pop(sha256, None)
        return path


async def place_all(
    cache: PackageCache | None, packages: Iterable[PackageFile], folder: Path,
    owner: tuple[int, int] | None, placed: list[str],
) -> None:
    """Fetch (or find cached) and place each package in turn, appending a log line to
    ``placed`` for each; PackageError (naming the package) at the first that fails."""
    for package in packages:
        label, cached = await fetch_cached(cache, package)
        written = await asyncio.to_thread(place, package, cached, folder, owner)
        placed.append(f"{label} is in {written}")


async def fetch_cached(cache: PackageCache | None, package: PackageFile) -> tuple[str, Path]:
    """The package's name for messages and its cached file (fetched first if needed);
    PackageError naming the package when it cannot be had."""
    label = f"package {package.id} {package.version}"
    if cache is None:
        raise PackageError(f"{label}: this worker cannot fetch packages")
    try:
        return label, await cache.get(package.sha256)
    except PackageError as exc:
        raise PackageError(f"{label}: {exc}") from None


def place(package: PackageFile, cached: Path, folder: Path, owner: tuple[int, int] | None = None) -> str:
    """Copy or extract one package into the step folder; returns what it became (a
    relative path, for the log). ``owner`` (uid, gid): who must own what is written."""
    label = f"package {package.id} {package.version}"
    try:
        check_package_id(package.id)
        file_name = check_file_name(package.file_name or package.id)
    except Rejected as exc:
        raise PackageError(f"{label}: {exc}") from None
    if is_archive(file_name):
        target = folder / package.id
        if target.exists():
            raise PackageError(f"{label}: {package.id}/ is already in the working folder")
        checked = _check_archive(cached, file_name, label)
        target.mkdir(mode=0o700)
        try:
            if checked == "zip":
                _extract_zip(cached, target, label)
            else:
                _extract_tar(cached, target, label)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        written = f"{package.id}/"
    else:
        target = folder / file_name
        if target.exists():
            raise PackageError(f"{label}: {file_name} is already in the working folder")
        shutil.copyfile(cached, target)
        written = file_name
    if owner is not None:
        _chown_tree(target, *owner)
    return written


# -- archive checks --------------------------------------------------------------------------


def member_problem(name: str) -> str | None:
    """Why an archive member's path cannot be extracted into a folder, or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "its path is absolute"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "its path contains '..'"
    if "\0" in name:
        return "its path contains a NUL character"
    return None


def link_problem(target: str) -> str | None:
    """Why a symlink to ``target`` could lead out of the folder, or None. Links with
    ``..`` are refused even when they would stay inside: through another link a target
    that looks inside can point anywhere."""
    if not target:
        return "it is an empty symlink"
    if target.startswith(("/", "\\")):
        return f"it is a symlink to the absolute path {target!r}"
    if ".." in PurePosixPath(target.replace("\\", "/")).parts:
        return f"it is a symlink to {target!r}, which contains '..'"
    return None


def _refuse(label: str, member: str, why: str) -> PackageError:
    return PackageError(f"{label}: refused, member {member!r} escapes the folder: {why}")


def _check_archive(path: Path, file_name: str, label: str) -> str:
    """Check every member before anything is written; returns "zip" or "tar"."""
    if file_name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                _check_members(label, _zip_members(zf))
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"{label}: not a readable zip archive: {exc}") from None
        return "zip"
    try:
        with tarfile.open(path, "r:gz") as tf:
            _check_members(label, _tar_members(tf, label))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageError(f"{label}: not a readable .tar.gz archive: {exc}") from None
    return "tar"


def _check_members(label: str, members: Iterable[tuple[str, int, str | None]]) -> None:
    """``members``: (path, size, symlink target or None)."""
    total = 0
    for count, (name, size, link) in enumerate(members, start=1):
        total += size
        if count > MAX_MEMBERS:
            raise PackageError(f"{label}: refused, more than {MAX_MEMBERS} members")
        if total > MAX_EXTRACTED_BYTES:
            raise PackageError(f"{label}: refused, more than {MAX_EXTRACTED_BYTES} bytes unpacked")
        why = member_problem(name) or (link_problem(link) if link is not None else None)
        if why is not None:
            raise _refuse(label, name, why)


def _zip_members(zf: zipfile.ZipFile) -> Iterable[tuple[str, int, str | None]]:
    for info in zf.infolist():
        link = None
        if stat.S_ISLNK(info.external_attr >> 16):
            link = zf.read(info).decode("utf-8")
        yield info.filename, info.file_size, link


def _tar_members(tf: tarfile.TarFile, label: str) -> Iterable[tuple[str, int, str | None]]:
    for member in tf:
        if member.issym():
            yield member.name, 0, member.linkname
        elif member.islnk():
            # A hard link names another member, from the archive's root.
            why = member_problem(member.linkname)
            if why is not None:
                raise _refuse(label, member.name, f"it is a hard link to {member.linkname!r}: {why}")
            yield member.name, 0, None
        elif member.isfile() or member.isdir():
            yield member.name, member.size, None
        else:
            raise _refuse(label, member.name, "it is a device, fifo or other special file")


# -- extraction (after the checks passed) ------------------------------------------------------


def _extract_zip(path: Path, target: Path, label: str) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            dest = target / info.filename
            mode = info.external_attr >> 16
            if info.is_dir():
                dest.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(zf.read(info).decode("utf-8"), dest)
                continue
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
            os.chmod(dest, 0o700 if mode & 0o111 else 0o600)


def _extract_tar(path: Path, target: Path, label: str) -> None:
    try:
        with tarfile.open(path, "r:gz") as tf:
            # The "data" filter checks again as it writes (links resolved for real), and
            # drops special files, setuid bits and ownership.
            tf.extractall(target, filter="data")
    except tarfile.TarError as exc:
        raise PackageError(f"{label}: refused while extracting: {exc}") from None


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
