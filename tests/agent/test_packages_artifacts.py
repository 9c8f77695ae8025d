"""Packages placed into step folders (cache, archives and their safety) and artifacts
returned with shoal-artifact, through the real executor."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from agent.artifacts import ArtifactNotReturned
from agent.executor import StepExecutor
from agent.packages import PackageCache, PackageError, place
from agent.ports import Artifact, PackageFile
from tests.agent.support import Recorder, request


class DictSource:
    """A package source holding bytes by hash (``wrong`` serves other bytes)."""

    def __init__(self, *blobs: bytes, wrong: bool = False) -> None:
        self.blobs = {hashlib.sha256(b).hexdigest(): b for b in blobs}
        self.wrong = wrong
        self.fetches = 0

    async def fetch(self, sha256: str, dest: Path, /) -> None:
        self.fetches += 1
        dest.write_bytes(b"tampered" if self.wrong else self.blobs[sha256])  # noqa: ASYNC240


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tgz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return out.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def zipped(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return out.getvalue()


def place_bytes(tmp_path: Path, data: bytes, file_name: str, package_id: str = "app") -> Path:
    cached = tmp_path / "cached"
    cached.write_bytes(data)
    folder = tmp_path / "step"
    folder.mkdir(exist_ok=True)
    place(PackageFile(package_id, "1.0", sha(data), file_name), cached, folder)
    return folder


# -- archives --------------------------------------------------------------------------------


def test_a_tar_gz_is_extracted_into_a_folder_named_after_the_package(tmp_path: Path) -> None:
    data = tgz([("bin/run.sh", b"echo hi\n"), ("README", b"r"), link("bin/latest", "run.sh")])
    folder = place_bytes(tmp_path, data, "app-1.0.tar.gz")
    assert (folder / "app" / "bin" / "run.sh").read_bytes() == b"echo hi\n"
    assert os.readlink(folder / "app" / "bin" / "latest") == "run.sh"


def test_a_zip_is_extracted_and_a_plain_file_is_copied(tmp_path: Path) -> None:
    folder = place_bytes(tmp_path, zipped({"a/b.txt": b"zip"}), "app.zip")
    assert (folder / "app" / "a" / "b.txt").read_bytes() == b"zip"
    folder = place_bytes(tmp_path, b"plain", "notes.txt", package_id="notes")
    assert (folder / "notes.txt").read_bytes() == b"plain"


@pytest.mark.parametrize(("data", "member", "why"), [
    (tgz([("ok.txt", b"1"), ("../evil", b"x")]), "../evil", "'..'"),
    (tgz([("/etc/evil", b"x")]), "/etc/evil", "absolute"),
    (tgz([("a/../../evil", b"x")]), "a/../../evil", "'..'"),
    (tgz([link("up", "../../outside")]), "up", "symlink to '../../outside'"),
    (tgz([link("root", "/etc")]), "root", "absolute path '/etc'"),
    (tgz([link("hard", "../../etc/passwd", tarfile.LNKTYPE)]), "hard", "hard link"),
    (tgz([link("dev", "", tarfile.CHRTYPE)]), "dev", "device"),
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-up", "symlink-absolute", "hardlink", "device"])
def test_an_escaping_tar_member_refuses_the_whole_package(
    tmp_path: Path, data: bytes, member: str, why: str
) -> None:
    with pytest.raises(PackageError) as refused:
        place_bytes(tmp_path, data, "app.tgz")
    assert f"member {member!r} escapes the folder" in str(refused.value)
    assert why in str(refused.value)
    assert "package app 1.0" in str(refused.value)
    assert list((tmp_path / "step").iterdir()) == []  # nothing was written
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(("data", "member"), [
    (zipped({"ok": b"1", "../evil": b"x"}), "../evil"),
    (zipped({"/abs/evil": b"x"}), "/abs/evil"),
    (zipped({}, symlinks={"out": "../../etc"}), "out"),
], ids=["dotdot", "absolute", "symlink-up"])
def test_an_escaping_zip_member_refuses_the_whole_package(tmp_path: Path, data: bytes, member: str) -> None:
    with pytest.raises(PackageError, match=f"member '{member}' escapes the folder"):
        place_bytes(tmp_path, data, "app.zip")
    assert list((tmp_path / "step").iterdir()) == []


def test_a_corrupt_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a readable"):
        place_bytes(tmp_path, b"not gzip", "app.tgz")


# -- the cache ---------------------------------------------------------------------------------


def test_the_cache_fetches_once_and_checks_the_hash(tmp_path: Path) -> None:
    source = DictSource(b"bytes")
    cache = PackageCache(tmp_path / "cache", source)

    async def twice() -> tuple[Path, Path]:
        return await cache.get(sha(b"bytes")), await cache.get(sha(b"bytes"))

    first, second = asyncio.run(twice())
    assert first == second == tmp_path / "cache" / sha(b"bytes")
    assert first.read_bytes() == b"bytes" and source.fetches == 1

    bad = PackageCache(tmp_path / "bad", DictSource(b"bytes", wrong=True))
    with pytest.raises(PackageError, match="the bytes fetched have SHA-256"):
        asyncio.run(bad.get(sha(b"bytes")))
    assert list((tmp_path / "bad").iterdir()) == []  # no partial or wrong file is kept
    with pytest.raises(PackageError, match="is not a SHA-256"):
        asyncio.run(bad.get("../../etc/passwd"))


# -- through the executor ------------------------------------------------------------------------


def run(
    executor: StepExecutor, req: object, keep: dict[str, bytes], refuse: str = ""
) -> tuple[object, Recorder]:
    async def sink(artifact: Artifact) -> None:
        if artifact.name == refuse:
            raise ArtifactNotReturned("the test refuses it")
        data = artifact.path.read_bytes()
        assert (len(data), sha(data)) == (artifact.size, artifact.sha256)
        keep[artifact.name] = data

    async def main() -> tuple[object, Recorder]:
        recorder = Recorder()
        result = await executor.run(
            req, recorder, on_started=recorder.started, on_artifact=sink)  # type: ignore[arg-type]
        return result, recorder

    return asyncio.run(main())


def test_a_step_reads_its_package_and_returns_artifacts(tmp_path: Path) -> None:
    archive = tgz([("config.txt", b"from the package\n")])
    executor = StepExecutor(packages=PackageCache(tmp_path / "cache", DictSource(archive)))
    script = (
        "set -e\n"
        "cat app/config.txt > out.txt\n"
        "echo extra > extra.bin\n"
        "shoal-artifact out.txt\n"
        "shoal-artifact extra.bin renamed.bin\n"
        "ln -s /etc/passwd \"$SHOAL_ARTIFACTS_DIR/sneaky\"\n"
    )
    keep: dict[str, bytes] = {}
    req = request(tmp_path / "work", script, packages=(PackageFile("app", "1.0", sha(archive), "app.tgz"),))
    result, log = run(executor, req, keep)
    assert keep == {"out.txt": b"from the package\n", "renamed.bin": b"extra\n"}
    assert "package app 1.0 is in app/" in log.texts("system")
    assert any("artifact 'sneaky' not returned" in t for t in log.texts("system"))
    assert result.outcome == "failed"  # type: ignore[attr-defined]  # an artifact was not returned
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(("args", "why"), [
    ("out.txt ../x", "'..' is not allowed"),
    ("out.txt /etc/x", "absolute paths are not allowed"),
    ("out.txt a/b", "'/' is not allowed"),
])
def test_shoal_artifact_refuses_bad_names(tmp_path: Path, args: str, why: str) -> None:
    script = f"echo hi > out.txt\nshoal-artifact {args}\necho \"exit=$?\"\n"
    keep: dict[str, bytes] = {}
    result, log = run(StepExecutor(), request(tmp_path / "work", script), keep)
    assert keep == {}
    assert "exit=2" in log.texts("stdout")
    assert any(why in t for t in log.texts("stderr"))
    assert result.outcome == "success"  # type: ignore[attr-defined]


def test_a_package_that_escapes_fails_the_step_before_it_runs(tmp_path: Path) -> None:
    archive = tgz([("../evil", b"x")])
    executor = StepExecutor(packages=PackageCache(tmp_path / "cache", DictSource(archive)))
    req = request(tmp_path / "work", "echo ran", packages=(PackageFile("bad", "1", sha(archive), "bad.tgz"),))
    result, log = run(executor, req, {})
    assert result.outcome == "failed"  # type: ignore[attr-defined]
    assert "member '../evil' escapes the folder" in result.reason  # type: ignore[attr-defined]
    assert log.texts("stdout") == [] and log.events == ["batch"]  # it never started
    assert list((tmp_path / "work").iterdir()) == []


def test_without_a_package_cache_a_step_with_packages_fails(tmp_path: Path) -> None:
    req = request(tmp_path / "work", "true", packages=(PackageFile("p", "1", "ab" * 32, "p.txt"),))
    result, _ = run(StepExecutor(), req, {})
    assert "cannot fetch packages" in result.reason  # type: ignore[attr-defined]
