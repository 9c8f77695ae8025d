"""The built-in worker process through the server's handle on it (BuiltInWorkerProcess):
real child processes, real steps, a real nats-server for packages."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.dispatch.builtin import STOPPED, BuiltInWorkerProcess
from adapters.nats import subjects
from adapters.nats.objects import ObjectFiles, ensure_buckets
from agent.artifacts import ArtifactNotReturned
from agent.ports import Artifact, LogLine, PackageFile
from tests.agent.support import Recorder, process_exists
from tests.integration.builtin_support import (
    config,
    group_gone,
    line_seen,
    run,
    started_worker,
    step,
    step_folders,
)
from tests.integration.nats_support import bus_on, embedded

pytestmark = pytest.mark.integration


def test_a_step_runs_in_the_worker_process_and_reports_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            script = 'echo "parent=$PPID"; echo out; echo err >&2; exit 3'
            asked = datetime.now(UTC)
            result, rec = await run(worker, step(tmp_path, script))
            assert (result.outcome, result.exit_code, result.reason) == ("failed", 3, "exit code 3")
            assert rec.events[0] == "started", "started comes before any log batch"
            # When the process began, by the worker's clock (the server's own).
            assert asked <= rec.started_at <= datetime.now(UTC)
            assert rec.started_at <= rec.lines[0].at
            assert rec.texts() == [f"parent={worker.pid}", "out", "err"]
            assert [line.stream for line in rec.lines] == ["stdout", "stdout", "stderr"]
            assert worker.pid != os.getpid()
            assert await group_gone(rec.pid)
            assert step_folders(tmp_path) == []

    asyncio.run(body())


def test_cancel_stops_the_step_and_its_processes(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            result, rec = await run(worker, step(tmp_path, "echo up; sleep 30 & wait"),
                                    cancel_when=lambda line: line.text == "up")
            assert (result.outcome, result.reason) == ("cancelled", "cancelled")
            assert rec.texts()[-1] == "cancelled"
            assert await group_gone(rec.pid) and step_folders(tmp_path) == []

    asyncio.run(body())


def test_a_cancelled_run_aborts_the_step_before_it_returns(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            rec = Recorder()
            running = asyncio.create_task(worker.run(step(tmp_path, "echo up; sleep 30 & wait"), rec,
                                                     None, rec.started))
            await line_seen(rec, "up")
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            # As with the executor in-process: the group is killed (its orphans are init's to
            # reap) and the folder removed.
            assert await group_gone(rec.pid) and step_folders(tmp_path) == []
            assert "cancelled" not in rec.texts(), "an abort has no result and no log line"
            # The worker goes on serving.
            result, _ = await run(worker, step(tmp_path, "true"))
            assert result.outcome == "success"

    asyncio.run(body())


def test_a_timeout_kills_the_step(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            result, rec = await run(worker, step(tmp_path, "sleep 30", timeout_s=0.5))
            assert (result.outcome, result.reason) == ("timed_out", "timed out after 0.5s")
            assert await group_gone(rec.pid) and step_folders(tmp_path) == []

    asyncio.run(body())


def test_a_step_can_run_while_another_steps_log_is_held_up(tmp_path: Path) -> None:
    """No head-of-line blocking: one step's slow sink does not hold up another step."""

    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            release = asyncio.Event()
            slow = Recorder()

            async def held(batch: list[LogLine]) -> None:
                await release.wait()
                await slow(batch)

            held_run = asyncio.create_task(worker.run(step(tmp_path, "echo first; echo second"), held))
            await asyncio.sleep(0.3)  # its first batch is now waiting in ``held``
            result, rec = await asyncio.wait_for(run(worker, step(tmp_path, "echo other")), 10)
            assert result.outcome == "success" and rec.texts() == ["other"]
            assert not held_run.done()
            release.set()
            assert (await held_run).outcome == "success"
            assert slow.texts() == ["first", "second"]

    asyncio.run(body())


def test_a_sink_that_fails_aborts_the_step_and_raises(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            pids: list[int] = []

            async def started(pid: int, at: object = None) -> None:
                pids.append(pid)

            async def broken(batch: list[LogLine]) -> None:
                raise RuntimeError("the store is down")

            with pytest.raises(RuntimeError, match="the store is down"):
                await worker.run(step(tmp_path, "echo up; sleep 30 & wait"), broken, None, started)
            assert await group_gone(pids[0]) and step_folders(tmp_path) == []

    asyncio.run(body())


def test_one_hundred_thousand_lines_arrive_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            script = "import sys\nsys.stdout.write(''.join(f'{i}\\n' for i in range(100_000)))\n"
            result, rec = await run(worker, step(tmp_path, script, syntax="python"))
            assert result.outcome == "success"
            assert rec.texts() == [str(i) for i in range(100_000)]
            assert max(len(batch) for batch in rec.batches) <= 1000

    asyncio.run(body())


def test_artifacts_reach_the_sink_and_a_refused_one_fails_the_step(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            stored: dict[str, bytes] = {}

            async def on_artifact(artifact: Artifact) -> None:
                if artifact.name == "b.txt":
                    raise ArtifactNotReturned("no room")
                data = artifact.path.read_bytes()
                assert (artifact.size, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
                stored[artifact.name] = data

            script = "echo hello > a.txt; shoal-artifact a.txt; echo no > b.txt; shoal-artifact b.txt"
            result, rec = await run(worker, step(tmp_path, script), on_artifact=on_artifact)
            assert stored == {"a.txt": b"hello\n"}
            assert result.outcome == "failed" and result.reason == "artifact 'b.txt' not returned: no room"
            assert any(t.startswith("artifact 'a.txt' returned (6 bytes") for t in rec.texts())
            assert list((tmp_path / "inbox").iterdir()) == [], "the server removed what it took"
            assert step_folders(tmp_path) == []
            # Without an artifact sink the files are not collected at all, as in-process.
            result, rec = await run(worker, step(tmp_path, "echo x > c.txt; shoal-artifact c.txt"))
            assert result.outcome == "success" and not any("artifact" in t for t in rec.texts())

    asyncio.run(body())


def test_packages_are_fetched_by_the_server_from_the_object_store(tmp_path: Path) -> None:
    notes = b"release notes\n"
    sha = hashlib.sha256(notes).hexdigest()

    async def body() -> None:
        async with embedded(tmp_path / "nats") as nats, bus_on(nats.url, "server") as bus:
            await bus.ensure_streams()
            await ensure_buckets(bus)
            store = ObjectFiles(bus, subjects.PACKAGES_BUCKET)
            (tmp_path / "notes.txt").write_bytes(notes)
            await store.put_file(sha, tmp_path / "notes.txt")
            async with started_worker(tmp_path, packages=store) as worker:
                package = PackageFile("notes", "1.0", sha, "notes.txt")
                result, rec = await run(worker, step(tmp_path, "cat notes.txt", packages=(package,)))
                assert result.outcome == "success"
                assert rec.texts() == ["package notes 1.0 is in notes.txt", "release notes"]
                assert (tmp_path / "packages" / sha).read_bytes() == notes
                missing = PackageFile("gone", "2.0", "0" * 64, "gone.txt")
                result, rec = await run(worker, step(tmp_path, "true", packages=(missing,)))
                assert result.outcome == "failed"
                assert result.reason.startswith("package gone 2.0: could not fetch it: ")
                assert [p.name for p in (tmp_path / "packages").iterdir()] == [sha], "no partial file left"

    asyncio.run(body())


def test_when_the_worker_process_dies_its_steps_fail_and_a_new_one_takes_over(tmp_path: Path) -> None:
    async def body() -> None:
        async with started_worker(tmp_path) as worker:
            first = worker.pid
            assert first is not None
            rec = Recorder()
            running = asyncio.create_task(worker.run(
                step(tmp_path, "echo up; sleep 300 & sleep 300 & wait"), rec, None, rec.started
            ))
            await line_seen(rec, "up")
            os.kill(first, signal.SIGKILL)
            result = await asyncio.wait_for(running, 15)
            reason = f"the built-in worker process (pid {first}) ended unexpectedly: killed by signal SIGKILL"
            assert (result.outcome, result.exit_code, result.reason) == ("failed", None, reason)
            assert rec.texts()[-1] == reason
            assert await group_gone(rec.pid), "the orphaned step processes were killed"
            assert step_folders(tmp_path) == []
            second, _ = await run(worker, step(tmp_path, "echo again"))
            assert second.outcome == "success"
            assert worker.pid not in (None, first) and not process_exists(first)

    asyncio.run(body())


def test_stopping_the_worker_ends_its_running_steps(tmp_path: Path) -> None:
    async def body() -> None:
        worker = BuiltInWorkerProcess(config(tmp_path))
        await worker.start()
        pid = worker.pid
        assert pid is not None
        rec = Recorder()
        running = asyncio.create_task(worker.run(step(tmp_path, "echo up; sleep 30 & wait"), rec,
                                                 None, rec.started))
        await line_seen(rec, "up")
        await worker.stop(grace=10.0)
        result = await running
        assert (result.outcome, result.reason) == ("failed", STOPPED)
        assert await group_gone(rec.pid) and step_folders(tmp_path) == []
        assert not process_exists(pid) and worker.pid is None
        # A stopped worker runs nothing more, and says why.
        result, rec = await run(worker, step(tmp_path, "true"))
        assert result.outcome == "failed" and "stopping" in result.reason

    asyncio.run(body())


def test_a_worker_that_cannot_start_fails_the_step_saying_why(tmp_path: Path) -> None:
    async def body() -> None:
        worker = BuiltInWorkerProcess(config(tmp_path, python=str(tmp_path / "no-python")))
        result, rec = await run(worker, step(tmp_path, "true"))
        assert result.outcome == "failed"
        assert result.reason.startswith("the built-in worker process could not start: ")
        assert "no-python" in result.reason and rec.texts() == [result.reason]

    asyncio.run(body())

