"""/api/packages: the built-in package feed (push a version once; list them)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from pydantic import BaseModel

from adapters.http.deps import App, Container, Views, require
from adapters.http.jsonbody import StrictJsonRoute
from adapters.http.schemas import Page, Skip, Take, position_header
from adapters.nats import subjects
from adapters.nats.objects import ObjectMissing
from domain.actors import Actor
from domain.errors import Rejected
from domain.keys import Permission
from domain.packages import MAX_PACKAGE_BYTES, check_file_name
from projections.packages import list_packages

router = APIRouter(prefix="/api/packages", tags=["packages"], route_class=StrictJsonRoute)

CanPush = Annotated[Actor, Depends(require(Permission.PACKAGE_PUSH))]
CanView = Annotated[Actor, Depends(require(Permission.PACKAGE_VIEW))]

_CHUNK = 1024 * 1024


class PackageOut(BaseModel):
    """One pushed version of a package."""

    id: str
    version: str
    sha256: str
    size: int
    file_name: str
    pushed: str
    pushed_by: str


def _digest(f: BinaryIO) -> tuple[str, int]:
    """SHA-256 and size of an uploaded file, read from its start; left at its start."""
    f.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if size > MAX_PACKAGE_BYTES:
            raise Rejected(f"a package is at most {MAX_PACKAGE_BYTES} bytes")
    f.seek(0)
    return digest.hexdigest(), size


def _file_name(raw: str | None) -> str:
    """The upload's own name without any folder part a client may have sent."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not name:
        raise Rejected("the file part needs a file name (it decides whether the package is an archive)")
    return check_file_name(name)


@router.post("", status_code=201, response_model=PackageOut)
async def push(
    id: Annotated[str, Form(description="Package id, e.g. my-app")],
    version: Annotated[str, Form(description="Version, e.g. 1.2.3")],
    file: Annotated[UploadFile, File(description="The package: .zip/.tar.gz/.tgz or any file")],
    app: App, container: Container, actor: CanPush, response: Response,
) -> PackageOut:
    """Push one version of a package; 409 when that version exists already. The bytes go
    to the packages object store (by their SHA-256) before the push is recorded."""
    await asyncio.to_thread(app.check_new_package, id, version)
    file_name = _file_name(file.filename)
    sha256, size = await asyncio.to_thread(_digest, file.file)
    store = container.objects(subjects.PACKAGES_BUCKET)
    try:
        await store.info(sha256)  # content-addressed: the same bytes are stored once
    except ObjectMissing:
        await store.put_fileobj(sha256, file.file)
    saved = await asyncio.to_thread(
        lambda: app.push_package(id, version, sha256=sha256, size=size, file_name=file_name, actor=actor)
    )
    response.headers.update(position_header(saved.position))
    package = saved.aggregate
    return PackageOut(
        id=package.package_id, version=package.package_version, sha256=package.sha256, size=package.size,
        file_name=package.file_name, pushed=package.created_on.isoformat(), pushed_by=actor.name,
    )


@router.get("", response_model=Page[PackageOut])
def list_(
    views: Views, _: CanView, id: str | None = None, skip: Skip = 0, take: Take = 100,
) -> Page[PackageOut]:
    """Pushed packages by id, newest first within an id; `id` filters to one package."""
    rows, total = list_packages(views, package_id=id, skip=skip, take=take)
    return Page[PackageOut](items=[PackageOut(**r) for r in rows], total=total)
