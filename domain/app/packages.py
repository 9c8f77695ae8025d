"""Commands on the built-in package feed, and resolving a step's packages."""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import RecordConflictError

from domain.actors import Actor
from domain.app.base import CommandsBase, Saved
from domain.errors import Conflict, NotFound, Rejected
from domain.messages import PackageRef
from domain.packages import (
    MAX_PACKAGE_BYTES,
    Package,
    check_file_name,
    check_package_id,
    check_sha256,
    check_version,
    package_key,
)


class PackageCommands(CommandsBase):
    """Push packages; look them up by id and version."""

    def find_package(self, package_id: str, version: str) -> Package | None:
        """One pushed version, or None."""
        return self._find(Package, package_key(package_id, version))

    def check_new_package(self, package_id: str, version: str) -> None:
        """Rejected for a bad id or version, Conflict when that version exists: what an
        upload is checked for before its bytes are read."""
        check_package_id(package_id)
        check_version(version)
        if self.find_package(package_id, version) is not None:
            raise Conflict(f"package {package_id} version {version} already exists")

    def push_package(
        self, package_id: str, version: str, *, sha256: str, size: int, file_name: str, actor: Actor
    ) -> Saved[Package]:
        """Record a pushed package (its bytes are in the object store already). A version
        is pushed once: a second push, even a concurrent one, is a Conflict."""
        self.check_new_package(package_id, version)
        check_sha256(sha256)
        check_file_name(file_name)
        if not 0 <= size <= MAX_PACKAGE_BYTES:
            raise Rejected(f"a package is at most {MAX_PACKAGE_BYTES} bytes")
        package = Package(
            package_id=package_id, package_version=version, sha256=sha256, size=size, file_name=file_name,
            actor=actor,
        )
        try:
            position = self._save(package)
        except RecordConflictError:
            raise Conflict(f"package {package_id} version {version} already exists") from None
        return Saved(package, position)

    def resolve_packages(self, wanted: Sequence[tuple[str, str]]) -> tuple[PackageRef, ...]:
        """What a step's ``(id, version)`` list means: each pushed package's hash and file
        name. NotFound names the first package that was never pushed."""
        refs = []
        for package_id, version in wanted:
            package = self.find_package(package_id, version)
            if package is None:
                raise NotFound(f"package {package_id} version {version} was not pushed to the feed")
            refs.append(PackageRef(package_id, version, package.sha256, package.file_name))
        return tuple(refs)
