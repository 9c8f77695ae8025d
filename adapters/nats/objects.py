"""Files in JetStream object stores (``shoal-packages``, ``shoal-artifacts``).

Writing uses nats-py's object store (the server only). Reading is done here with plain
``STREAM.MSG.GET`` requests on the bucket's stream: the object's meta message by subject,
then each chunk by ``next_by_subj``. That is the one JetStream call an agent needs to
fetch a package, so its NATS user gets exactly that on exactly the packages stream (see
``subjects.agent_permissions``): no consumers, no flow control, and no way to write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType

from adapters.nats import subjects
from adapters.nats.bus import NatsBus


class ObjectMissing(LookupError):
    """No object of that name in the bucket."""


class ObjectCorrupt(RuntimeError):
    """An object's bytes do not match its recorded size or digest."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the meta message of an object says."""

    name: str
    nuid: str
    size: int
    sha256: str  # lower-case hex


def stream_of(bucket: str) -> str:
    """The JetStream stream that holds a bucket."""
    return f"OBJ_{bucket}"


class ObjectFiles:
    """One bucket, through the bus's connection."""

    def __init__(self, bus: NatsBus, bucket: str) -> None:
        self.bus = bus
        self.bucket = bucket
        self.stream = stream_of(bucket)

    async def ensure(self) -> None:
        """Create the bucket (file storage) unless it exists."""
        js = self.bus.jetstream()
        try:
            await js.object_store(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            await js.create_object_store(
                self.bucket, ObjectStoreConfig(bucket=self.bucket, storage=StorageType.FILE)
            )

    async def put_file(self, name: str, path: Path) -> None:
        """Store the file at ``path`` as ``name`` (replacing an object of that name)."""
        store = await self.bus.jetstream().object_store(self.bucket)
        with path.open("rb") as f:
            await store.put(name, cast(Any, f))  # nats-py reads any file with readinto

    async def put_fileobj(self, name: str, f: BinaryIO) -> None:
        """Store an open binary file, read from its current position, as ``name``."""
        store = await self.bus.jetstream().object_store(self.bucket)
        await store.put(name, cast(Any, f))  # nats-py reads any file with readinto

    async def info(self, name: str) -> ObjectInfo:
        """The object's meta data; ObjectMissing when there is none (or it was deleted)."""
        key = base64.urlsafe_b64encode(name.encode()).decode()
        try:
            msg = await self.bus.jetstream().get_last_msg(self.stream, f"$O.{self.bucket}.M.{key}")
        except nats.js.errors.NotFoundError:
            raise ObjectMissing(name) from None
        try:
            meta = json.loads(msg.data or b"{}")
            digest = str(meta.get("digest", ""))
            if not digest.upper().startswith("SHA-256="):
                raise ValueError(f"unknown digest {digest!r}")
            sha256 = base64.urlsafe_b64decode(digest[len("SHA-256="):]).hex()
            info = ObjectInfo(name=name, nuid=str(meta["nuid"]), size=int(meta.get("size") or 0),
                              sha256=sha256)
            deleted = bool(meta.get("deleted"))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ObjectCorrupt(f"object {name!r} has unreadable meta data: {exc}") from None
        if deleted:
            raise ObjectMissing(name)
        return info

    async def read(self, name: str) -> AsyncIterator[bytes]:
        """The object's bytes, chunk by chunk; ObjectMissing before the first chunk when
        there is no such object, ObjectCorrupt after the last when the bytes are wrong."""
        info = await self.info(name)
        js = self.bus.jetstream()
        chunk_subject = f"$O.{self.bucket}.C.{info.nuid}"
        digest = hashlib.sha256()
        received, seq = 0, 1
        while received < info.size:
            try:
                msg = await js.get_msg(self.stream, seq=seq, subject=chunk_subject, next=True)
            except nats.js.errors.NotFoundError:
                raise ObjectCorrupt(f"object {name!r} ends after {received} of {info.size} bytes") from None
            data = msg.data or b""
            received += len(data)
            digest.update(data)
            seq = int(msg.seq or seq) + 1
            yield data
        if received != info.size or digest.hexdigest() != info.sha256:
            raise ObjectCorrupt(f"object {name!r} does not match its recorded size and SHA-256")

    async def fetch(self, name: str, dest: Path) -> None:
        """Write the object into the new file ``dest`` (a PackageSource for agent/)."""
        with dest.open("xb") as f:
            async for chunk in self.read(name):
                f.write(chunk)


async def ensure_buckets(bus: NatsBus) -> None:
    """The server's object stores (packages, artifacts)."""
    for bucket in (subjects.PACKAGES_BUCKET, subjects.ARTIFACTS_BUCKET):
        await ObjectFiles(bus, bucket).ensure()


def artifact_object(task_id: str, step: str, name: str) -> str:
    """The name of an artifact in the artifacts bucket."""
    return f"{task_id}/{step}/{name}"
