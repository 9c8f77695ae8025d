"""The SSH step runner against a real OpenSSH sshd (tests/ssh_support.py) on this machine,
which is also the "remote" host: what a step leaves running is visible with pgrep."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import secrets
import signal
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from adapters.ssh import HostKeyMismatch, SshConnections, SshStepRunner, SshTarget, SshUnavailable
from agent.packages import PackageCache
from agent.ports import Artifact, LogLine, PackageFile, StepRequest, StepResult
from tests.ssh_support import Sshd, free_port, require_sshd, running_sshd

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sshd]:
    require_sshd()
    with running_sshd(tmp_path / "sshd") as started:
        yield started


def target_of(server: Sshd, **changes: object) -> SshTarget:
    fields: dict[str, object] = {
        "host": server.host, "port": server.port, "username": server.user,
        "host_key_fingerprint": server.fingerprint, "private_key": server.private_key,
    }
    fields.update(changes)
    return SshTarget(**fields)  # type: ignore[arg-type]


@asynccontextmanager
async def runner_for(target: SshTarget, capacity: int = 4, **options: object
                     ) -> AsyncIterator[tuple[SshStepRunner, SshConnections]]:
    connections = SshConnections(**options)  # type: ignore[arg-type]
    try:
        yield SshStepRunner(connections, "worker-1", target, capacity, flush_interval=0.01), connections
    finally:
        await connections.close()


class Log:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.started: list[int] = []
        self.started_event = asyncio.Event()

    async def sink(self, batch: Sequence[LogLine]) -> None:
        assert self.started, "a log batch came before on_started"
        self.lines.extend(batch)

    async def on_started(self, pid: int) -> None:
        self.started.append(pid)
        self.started_event.set()

    def text(self, stream: str | None = None) -> list[str]:
        return [line.text for line in self.lines if stream is None or line.stream == stream]


def step(script: str, timeout_s: float | None = 30, **fields: object) -> StepRequest:
    return StepRequest(task_id="t-1", step_name="s", syntax=fields.pop("syntax", "bash"),  # type: ignore[arg-type]
                       script=script, env=fields.pop("env", {}),  # type: ignore[arg-type]
                       work_root=Path("/tmp"), timeout_s=timeout_s, **fields)  # type: ignore[arg-type]


def running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


async def until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s still not: {what}")
        await asyncio.sleep(0.05)


def unique_sleep() -> str:
    return f"sleep 123.{secrets.randbelow(10**9):09d}"


def test_output_env_and_exit_code(server: Sshd) -> None:
    async def main() -> tuple[StepResult, Log]:
        log = Log()
        async with runner_for(target_of(server)) as (runner, _):
            script = ('echo "one"; echo "to stderr" >&2; echo "var=$GREETING"; '
                      'echo "dir=$SHOAL_WORK_DIR"; test -d "$SHOAL_ARTIFACTS_DIR" && echo arts; '
                      'stat -c %a "$SHOAL_WORK_DIR"; printf "no newline"; exit 3')
            result = await runner.run(step(script, env={"GREETING": "hi 'there' $x"}), log.sink,
                                      on_started=log.on_started)
        return result, log

    result, log = asyncio.run(main())
    assert result == StepResult("failed", 3, "exit code 3")
    out = log.text("stdout")
    assert out[0] == "one"
    assert out[1] == "var=hi 'there' $x"
    folder = out[2].removeprefix("dir=")
    assert out[3:] == ["arts", "700", "no newline"]
    assert log.text("stderr") == ["to stderr"]
    assert log.started and log.started[0] > 1
    assert not os.path.exists(folder), "the step folder was not removed"


def test_success_and_many_lines_in_order(server: Sshd) -> None:
    async def main() -> tuple[StepResult, Log]:
        log = Log()
        async with runner_for(target_of(server)) as (runner, _):
            result = await runner.run(step("for i in $(seq 1 5000); do echo line-$i; done"), log.sink,
                                      on_started=log.on_started)
        return result, log

    result, log = asyncio.run(main())
    assert result == StepResult("success", 0, "")
    assert log.text("stdout") == [f"line-{i}" for i in range(1, 5001)]


def test_concurrent_steps_share_one_connection(server: Sshd) -> None:
    async def main() -> tuple[list[StepResult], list[Log], float, int]:
        logs = [Log() for _ in range(3)]
        async with runner_for(target_of(server), capacity=3) as (runner, connections):
            began = time.monotonic()
            results = await asyncio.gather(*(
                runner.run(step(f"date +%s.%N; sleep 1; date +%s.%N; echo step-{i}"), log.sink,
                           on_started=log.on_started)
                for i, log in enumerate(logs)))
            return list(results), logs, time.monotonic() - began, connections.connects

    results, logs, elapsed, connects = asyncio.run(main())
    assert all(r.outcome == "success" for r in results)
    assert [log.text("stdout")[2:] for log in logs] == [["step-0"], ["step-1"], ["step-2"]]
    assert connects == 1
    # They ran at once: every step started before any ended (timestamps, not wall time,
    # so a loaded machine does not make this flaky).
    spans = [[float(x) for x in log.text("stdout")[:2]] for log in logs]
    assert max(a for a, _ in spans) < min(b for _, b in spans), spans
    assert elapsed < 10


def test_other_syntaxes_are_refused_without_connecting() -> None:
    target = SshTarget("127.0.0.1", free_port(), "nobody", "SHA256:x", "not a key")

    async def main() -> tuple[StepResult, Log, int]:
        log = Log()
        log.started.append(0)  # the sink may be called: nothing starts
        async with runner_for(target) as (runner, connections):
            result = await runner.run(step("print(1)", syntax="python"), log.sink)
            return result, log, connections.connects

    result, log, connects = asyncio.run(main())
    assert result == StepResult("failed", None, "SSH workers run bash scripts only; this step is python")
    assert log.text("system") == [result.reason]
    assert connects == 0


def test_host_key_mismatch_refuses_and_runs_nothing(server: Sshd, tmp_path: Path) -> None:
    wrong = "SHA256:" + "A" * 43
    marker = tmp_path / "ran"

    async def main() -> tuple[StepResult, object]:
        log = Log()
        log.started.append(0)
        async with runner_for(target_of(server, host_key_fingerprint=wrong)) as (runner, _):
            result = await runner.run(step(f"touch {marker}"), log.sink)
            answer = await runner.health("true", 10)
        return result, answer

    result, answer = asyncio.run(main())
    assert result.outcome == "failed"
    assert wrong in result.reason and server.fingerprint in result.reason
    assert f"{server.host}:{server.port}" in result.reason
    assert answer.status == "unhealthy" and wrong in answer.detail and server.fingerprint in answer.detail  # type: ignore[attr-defined]
    assert not marker.exists()


def test_host_key_mismatch_raises_from_the_connections(server: Sshd) -> None:
    async def main() -> None:
        connections = SshConnections()
        try:
            with pytest.raises(HostKeyMismatch) as caught:
                await connections.get("w", target_of(server, host_key_fingerprint="SHA256:nope"))
            assert caught.value.presented == server.fingerprint
        finally:
            await connections.close()

    asyncio.run(main())


def test_cancel_kills_the_remote_process_group(server: Sshd) -> None:
    sleep = unique_sleep()

    async def main() -> tuple[StepResult, Log, float]:
        log = Log()
        cancel = asyncio.Event()
        async with runner_for(target_of(server)) as (runner, _):
            task = asyncio.create_task(runner.run(
                step(f'echo "$SHOAL_WORK_DIR"; {sleep} & {sleep}; echo never'), log.sink, cancel,
                log.on_started))
            await log.started_event.wait()
            await until(lambda: running(sleep), 5, "the step's sleep runs")
            began = time.monotonic()
            cancel.set()
            result = await task
            return result, log, time.monotonic() - began

    result, log, took = asyncio.run(main())
    assert result.outcome == "cancelled" and result.reason == "cancelled"
    assert not running(sleep), "a sleep of the cancelled step is still running"
    assert "never" not in log.text()
    assert not os.path.exists(log.text("stdout")[0])
    assert took < 5


def test_timeout_is_enforced_remotely_and_leaves_nothing(server: Sshd) -> None:
    sleep = unique_sleep()

    async def main() -> tuple[StepResult, float]:
        log = Log()
        async with runner_for(target_of(server)) as (runner, _):
            began = time.monotonic()
            result = await runner.run(step(f"{sleep} & {sleep}", timeout_s=1), log.sink,
                                      on_started=log.on_started)
            return result, time.monotonic() - began

    result, took = asyncio.run(main())
    assert result == StepResult("timed_out", None, "timed out after 1s")
    assert took < 5
    assert not running(sleep)


def test_sshd_gone_mid_step_fails_the_step_with_the_reason(server: Sshd) -> None:
    sleep = unique_sleep()

    async def main() -> tuple[StepResult, float, StepResult, int]:
        log = Log()
        async with runner_for(target_of(server)) as (runner, connections):
            task = asyncio.create_task(runner.run(step(f"echo ready; {sleep}"), log.sink,
                                                  on_started=log.on_started))
            await until(lambda: "ready" in log.text(), 10, "the step printed ready")
            began = time.monotonic()
            server.stop()
            result = await task
            took = time.monotonic() - began
            await until(lambda: not running(sleep), 5, "the orphaned sleep is gone")
            server.start()
            again = await runner.run(step("echo back"), _quiet)
            return result, took, again, connections.connects

    result, took, again, connects = asyncio.run(main())
    assert result.outcome == "failed" and result.exit_code is None
    assert result.reason.startswith(f"lost the SSH connection to {server.host}:{server.port}: ")
    assert took < 15
    assert again.outcome == "success"
    assert connects == 2


def test_keepalives_notice_a_silent_peer(server: Sshd) -> None:
    """A peer that stops answering (SIGSTOP: no FIN, no RST) is noticed by keep-alives."""
    sleep = unique_sleep()
    stopped: list[int] = []

    async def main() -> tuple[StepResult, float]:
        log = Log()
        async with runner_for(target_of(server), keepalive_interval=1, keepalive_count_max=2) as (runner, _):
            task = asyncio.create_task(runner.run(step(f"echo ready; {sleep}"), log.sink,
                                                  on_started=log.on_started))
            await until(lambda: "ready" in log.text(), 10, "the step printed ready")
            for pid in server.sshd_pids():
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            began = time.monotonic()
            try:
                result = await task
            finally:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
            return result, time.monotonic() - began

    result, took = asyncio.run(main())
    server.stop()  # the frozen connection's sshd and its session end with it
    assert result.outcome == "failed"
    assert result.reason.startswith(f"lost the SSH connection to {server.host}:{server.port}")
    assert took < 6


async def _quiet(batch: Sequence[LogLine]) -> None:
    pass


def test_artifacts_come_back(server: Sshd) -> None:
    got: dict[str, tuple[bytes, Artifact]] = {}

    async def collect(artifact: Artifact) -> None:
        got[artifact.name] = (artifact.path.read_bytes(), artifact)

    async def main() -> tuple[StepResult, Log]:
        log = Log()
        async with runner_for(target_of(server)) as (runner, _):
            script = ("printf 'hello artifact' > out.txt; shoal-artifact out.txt; "
                      "head -c 300000 /dev/urandom > big.bin; shoal-artifact big.bin data.bin; "
                      "shoal-artifact out.txt ../escape || echo refused")
            result = await runner.run(step(script), log.sink, None, log.on_started, collect)
        return result, log

    result, log = asyncio.run(main())
    assert result == StepResult("success", 0, "")
    assert "refused" in log.text("stdout")
    assert got["out.txt"][0] == b"hello artifact"
    data, artifact = got["data.bin"]
    assert len(data) == 300000 == artifact.size
    assert hashlib.sha256(data).hexdigest() == artifact.sha256
    assert set(got) == {"out.txt", "data.bin"}


class BytesSource:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    async def fetch(self, sha256: str, dest: Path, /) -> None:
        await asyncio.to_thread(dest.write_bytes, self.blobs[sha256])


def test_packages_are_placed_in_the_step_folder(server: Sshd, tmp_path: Path) -> None:
    plain = b"plain package\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("app/run.sh")
        body = b"echo from the archive\n"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    archive = buf.getvalue()
    blobs = {hashlib.sha256(b).hexdigest(): b for b in (plain, archive)}
    sha_plain, sha_archive = list(blobs)
    cache = PackageCache(tmp_path / "cache", BytesSource(blobs))

    async def main() -> tuple[StepResult, Log]:
        log = Log()
        connections = SshConnections()
        runner = SshStepRunner(connections, "w", target_of(server), 2, packages=cache)
        try:
            request = step("cat notes.txt; bash web/app/run.sh",
                           packages=(PackageFile("notes", "1.0", sha_plain, "notes.txt"),
                                     PackageFile("web", "2.0", sha_archive, "web.tar.gz")))
            result = await runner.run(request, log.sink, on_started=log.on_started)
        finally:
            await connections.close()
        return result, log

    result, log = asyncio.run(main())
    assert result == StepResult("success", 0, ""), log.text()
    assert log.text("stdout") == ["plain package", "from the archive"]
    assert "package notes 1.0 is in notes.txt" in log.text("system")


def test_health_answers(server: Sshd) -> None:
    async def main() -> list[str]:
        async with runner_for(target_of(server)) as (runner, _):
            answers = [await runner.health(script, 10) for script in (
                "echo fine", 'warn_healthcheck "disk at 85%"', 'fail_healthcheck "disk full"')]
        return [f"{a.status}:{a.detail}" for a in answers]

    assert asyncio.run(main()) == ["healthy:fine", "has_warnings:disk at 85%", "unhealthy:disk full"]


def test_an_unreachable_host_is_unavailable(server: Sshd) -> None:
    async def main() -> None:
        async with runner_for(target_of(server, port=free_port()), connect_timeout=3) as (runner, _):
            with pytest.raises(SshUnavailable, match=r"cannot connect to 127\.0\.0\.1:\d+"):
                await runner.health("true", 10)

    asyncio.run(main())


def test_the_private_key_never_reaches_the_log(server: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    target = target_of(server)
    assert server.private_key not in repr(target)

    async def main() -> None:
        log = Log()
        async with runner_for(target) as (runner, _):
            await runner.run(step("echo ok"), log.sink, on_started=log.on_started)
        async with runner_for(target_of(server, host_key_fingerprint="SHA256:x")) as (runner, _):
            await runner.run(step("echo ok"), _quiet)
        async with runner_for(target_of(server, private_key="garbage")) as (runner, _):
            with pytest.raises(SshUnavailable):
                await runner.health("true", 5)

    asyncio.run(main())
    secret_line = server.private_key.splitlines()[1]
    assert caplog.records
    assert secret_line not in caplog.text
    for record in caplog.records:
        assert secret_line not in str(record.__dict__)
