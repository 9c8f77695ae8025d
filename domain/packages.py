"""Packages of the built-in feed: a file pushed under an id and a version.

The bytes live in the object store under their SHA-256 (content-addressed); the
aggregate records what was pushed. Its id is uuid5 of ``id@version``, so a second push of
one version collides in the store instead of silently replacing the first.
"""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.errors import Rejected

_NAMESPACE = uuid5(NAMESPACE_URL, "https://shoal.dev/packages")

MAX_PACKAGE_BYTES = 1024 * 1024 * 1024
MAX_PACKAGES_PER_STEP = 20
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+ -]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_package_id(value: str) -> str:
    """A package id: letters, digits, ``.``, ``_``, ``-`` (starting with a letter or digit),
    at most 100 characters, no ``..``. Rejected otherwise."""
    if not _ID.fullmatch(value) or ".." in value:
        raise Rejected(
            f"package id {value!r} is not valid: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


def check_version(value: str) -> str:
    """A package version: letters, digits, ``.``, ``_``, ``+``, ``-``, at most 64
    characters, no ``..``. Rejected otherwise."""
    if not _VERSION.fullmatch(value) or ".." in value:
        raise Rejected(
            f"package version {value!r} is not valid: use 1 to 64 letters, digits, '.', '_', "
            "'+' or '-', starting with a letter or digit, without '..'"
        )
    return value


def check_file_name(value: str) -> str:
    """The name a non-archive package gets in the working folder: one path component of
    safe characters, not hidden, no ``..``."""
    if not _FILE_NAME.fullmatch(value) or ".." in value:
        raise Rejected(
            f"file name {value!r} is not valid: use letters, digits, spaces, '.', '_', '+' or "
            "'-' (no '/', no '..', not starting with '.')"
        )
    return value


def check_sha256(value: str) -> str:
    """A lower-case hex SHA-256."""
    if not _SHA256.fullmatch(value):
        raise Rejected(f"{value!r} is not a SHA-256 in lower-case hex")
    return value


def is_archive(file_name: str) -> bool:
    """Whether a package with this file name is extracted (zip, tar.gz) or copied."""
    return file_name.lower().endswith(ARCHIVE_SUFFIXES)


def package_key(package_id: str, version: str) -> UUID:
    """The aggregate id of one version of one package."""
    return uuid5(_NAMESPACE, f"{package_id}@{version}")


class Package(ShoalAggregate):
    """One pushed version of a package."""

    class Pushed(ShoalAggregate.Created):
        package_id: str
        package_version: str  # not "version": that is the aggregate's own
        sha256: str
        size: int
        file_name: str

    @staticmethod
    def create_id(
        package_id: str, package_version: str, sha256: str, size: int, file_name: str, actor: Actor
    ) -> UUID:
        """uuid5 of ``package_id@version``: pushing a version twice collides."""
        return package_key(package_id, package_version)

    @event(Pushed)
    def __init__(
        self, package_id: str, package_version: str, sha256: str, size: int, file_name: str,
        actor: Actor,
    ) -> None:
        self.package_id = package_id
        self.package_version = package_version
        self.sha256 = sha256
        self.size = size
        self.file_name = file_name
        self.is_deleted = False
