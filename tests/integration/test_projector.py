"""The server's handle on the projector process (ProjectorProcess) against real projector
processes, on SQLite and on PostgreSQL: it catches up before it is ready, follows the
server's saves within milliseconds, reports failing batches and recovers, and is started
again after a kill -9, patiently when new ones keep failing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.projector_child import ProjectorChild
from adapters.projector_process import ProjectorConfig, ProjectorError, ProjectorProcess
from adapters.store import open_application
from domain.app import Shoal
from projections.pools import get_pool
from tests.agent.support import process_exists
from tests.conftest import Backend
from tests.helpers import TESTER, rid
from tests.integration.conftest import Views

pytestmark = pytest.mark.integration

# Far above any wait below: what is seen in time was not found by the poll.
SLOW_POLL_S = 30.0


def config(backend: Backend, **kw: Any) -> ProjectorConfig:
    return ProjectorConfig(backend.data_dir, backend.database_url,
                           **{"poll_interval": SLOW_POLL_S, "restart_delay": 0.1, **kw})


@asynccontextmanager
async def started(app: Shoal, cfg: ProjectorConfig) -> AsyncIterator[ProjectorProcess]:
    """A started projector that the Application wakes after each save, as in the server;
    always stopped afterwards."""
    projector = ProjectorProcess(cfg)
    app.on_saved(projector.wake)
    await projector.start()
    try:
        yield projector
    finally:
        await projector.stop()


async def eventually(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)
    return value


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_it_is_ready_once_the_read_models_have_caught_up(backend: Backend, app: Shoal, views: Views) -> None:
    pools = [app.create_pool(name=rid("before"), actor=TESTER).aggregate for _ in range(3)]

    async def body() -> None:
        async with started(app, config(backend)) as projector:
            assert projector.watch.position == app.recorder.max_notification_id()
            assert all(get_pool(views, str(p.id)) is not None for p in pools)
            assert projector.pid is not None and parent_of(projector.pid) == os.getpid()
            assert projector.last_error is None

    asyncio.run(body())


def test_it_follows_the_servers_saves_within_milliseconds(backend: Backend, app: Shoal, views: Views) -> None:
    async def body() -> list[float]:
        async with started(app, config(backend)) as projector:
            latencies = []
            for _ in range(20):
                saved = app.create_pool(name=rid("live"), actor=TESTER)
                begun = time.perf_counter()
                assert await projector.watch.wait_async(saved.position, 0.5)
                latencies.append(time.perf_counter() - begun)
                assert get_pool(views, str(saved.aggregate.id)) is not None
            # Saves from many threads at once (as the thread pool makes them).
            positions = await asyncio.gather(*(
                asyncio.to_thread(lambda: app.create_pool(name=rid("burst"), actor=TESTER).position)
                for _ in range(40)
            ))
            assert await projector.watch.wait_async(max(positions), 2.0)
            return latencies

    latencies = asyncio.run(body())
    print(f"\n[{backend.kind}] save -> projector -> watch: max {max(latencies) * 1000:.1f} ms")


def test_wakes_from_many_threads_become_one_frame_with_the_highest_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    real_send = ProjectorChild.send

    def spy(self: ProjectorChild, frame: dict[str, Any]) -> None:
        sent.append(frame)
        real_send(self, frame)

    monkeypatch.setattr(ProjectorChild, "send", spy)

    async def body() -> None:
        app = open_application(tmp_path / "data", None)
        try:
            projector = ProjectorProcess(ProjectorConfig(tmp_path / "data", poll_interval=SLOW_POLL_S))
            await projector.start()
            try:
                def wake_many(first: int) -> None:
                    for position in range(first, 4000, 4):
                        projector.wake(position)

                threads = [threading.Thread(target=wake_many, args=(i,)) for i in range(4)]
                # The loop is held up meanwhile, as a busy server's is: every wake lands
                # while the first one's write is still pending.
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for _ in range(5):
                    await asyncio.sleep(0)
                assert sent == [{"op": "wake", "position": 3999}]
            finally:
                await projector.stop()
        finally:
            app.close()

    asyncio.run(body())


def test_a_failing_batch_is_reported_and_the_projector_recovers(
    backend: Backend, app: Shoal, views: Views
) -> None:
    async def body() -> None:
        async with started(app, config(backend)) as projector:
            with views.write() as cur:  # the pools' table goes away: its next batch fails
                cur.execute("ALTER TABLE rm_pools RENAME TO rm_pools_away")
            saved = app.create_pool(name=rid("blocked"), actor=TESTER)
            error = await eventually(lambda: projector.last_error, 10, "the error to be reported")
            assert "rm_pools" in error
            assert not await projector.watch.wait_async(saved.position, 0.3)
            with views.write() as cur:
                cur.execute("ALTER TABLE rm_pools_away RENAME TO rm_pools")
            assert await projector.watch.wait_async(saved.position, 10)
            assert get_pool(views, str(saved.aggregate.id)) is not None
            assert projector.last_error is None

    asyncio.run(body())


def test_a_killed_projector_is_started_again_and_catches_up(
    backend: Backend, app: Shoal, views: Views
) -> None:
    async def body() -> None:
        async with started(app, config(backend)) as projector:
            first = projector.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            error = await eventually(lambda: projector.last_error, 10, "the death to be noticed")
            assert error == (f"the projector process (pid {first}) ended unexpectedly: "
                             "killed by signal SIGKILL")
            # Saved while no projector runs: the next one catches up with it.
            saved = app.create_pool(name=rid("meanwhile"), actor=TESTER)
            assert await projector.watch.wait_async(saved.position, 20)
            assert get_pool(views, str(saved.aggregate.id)) is not None
            # Reads go on as soon as it reports progress; it is healthy once it is ready.
            await eventually(lambda: projector.last_error is None, 10, "the new one to be ready")
            assert projector.pid not in (None, first)
            assert not process_exists(first)
            later = app.create_pool(name=rid("after"), actor=TESTER)
            assert await projector.watch.wait_async(later.position, 0.5), "it follows saves again"

    asyncio.run(body())


def test_new_projectors_that_keep_failing_are_retried_with_a_growing_delay(
    tmp_path: Path, backend: Backend, app: Shoal
) -> None:
    """After its first process, the "python" the handle starts fails at once: attempts
    thin out instead of looping, the error says why, and stop() ends the retrying."""
    attempts = tmp_path / "attempts"
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{attempts}" ]; then echo x >> "{attempts}"; echo "no projector today" >&2; exit 1; fi\n'
        f'touch "{attempts}"\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)

    async def body() -> None:
        async with started(app, config(backend, python=str(python), max_restart_delay=5.0)) as projector:
            first = projector.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await asyncio.sleep(2.0)
            # Delays of 0.1, 0.2, 0.4, 0.8 s...: four attempts at most in two seconds.
            tries = len(attempts.read_text().splitlines())
            assert 2 <= tries <= 5
            assert projector.last_error is not None
            assert "could not start" in projector.last_error
            assert "exit code 1" in projector.last_error
            begun = time.monotonic()
        assert time.monotonic() - begun < 2.0, "stop() does not wait out a back-off"

    asyncio.run(body())


def test_a_projector_that_cannot_open_the_store_fails_the_start_saying_why(tmp_path: Path) -> None:
    async def body() -> None:
        projector = ProjectorProcess(ProjectorConfig(
            tmp_path, "postgresql://postgres@127.0.0.1:1/postgres", restart_delay=0.1
        ))
        with pytest.raises(ProjectorError) as caught:
            await projector.start()
        assert "could not start" in str(caught.value)
        assert "cannot reach PostgreSQL at 127.0.0.1:1/postgres" in str(caught.value)
        assert projector.pid is None
        await projector.stop()

    asyncio.run(body())


def test_a_hung_projector_is_reported_then_killed_and_replaced(
    backend: Backend, app: Shoal, views: Views
) -> None:
    """SIGSTOP stands for any hang: the process lives on and says nothing."""
    async def body() -> None:
        cfg = config(backend, stall_after_s=0.5, kill_after_s=2.0)
        async with started(app, cfg) as projector:
            first = projector.pid
            assert first is not None
            os.kill(first, signal.SIGSTOP)
            try:
                saved = app.create_pool(name=rid("stuck"), actor=TESTER)
                error = await eventually(lambda: projector.last_error, 2.0, "the stall to be reported")
                assert error.startswith("the read models have not moved for ")
                assert re.search(rf"\(pid {first}\) is \d+ events? behind", error), error
                assert projector.pid == first, "not killed before kill_after_s"
                assert await projector.watch.wait_async(saved.position, 15), "a new one caught up"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(first, signal.SIGCONT)
            assert projector.pid not in (None, first)
            await eventually(lambda: not process_exists(first), 5, "the hung process to be gone")
            assert get_pool(views, str(saved.aggregate.id)) is not None
            await eventually(lambda: projector.last_error is None, 10, "health to recover")

    asyncio.run(body())


def test_a_projector_with_nothing_to_do_is_never_taken_for_hung(
    backend: Backend, app: Shoal, views: Views
) -> None:
    async def body() -> None:
        async with started(app, config(backend, stall_after_s=0.2, kill_after_s=0.6)) as projector:
            first = projector.pid
            saved = app.create_pool(name=rid("quiet"), actor=TESTER)
            assert await projector.watch.wait_async(saved.position, 5)
            await asyncio.sleep(1.5)  # idle, well past both limits
            assert projector.pid == first
            assert projector.last_error is None

    asyncio.run(body())


def test_stopping_while_a_new_projector_catches_up_leaves_no_process_behind(
    tmp_path: Path, backend: Backend, app: Shoal
) -> None:
    """The second process takes a second to boot; stop() comes meanwhile. It must end
    that process and reap it before it returns, not leave it to a loop that is closing."""
    python = tmp_path / "python"
    marker = tmp_path / "booted-once"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{marker}" ]; then sleep 1; fi\n'
        f'touch "{marker}"\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)

    def children() -> set[int]:
        me = Path(f"/proc/{os.getpid()}/task")
        return {int(pid) for task in me.iterdir()
                for pid in (task / "children").read_text().split()}

    async def body() -> None:
        projector = ProjectorProcess(config(backend, python=str(python)))
        await projector.start()
        first = projector.pid
        assert first is not None
        before = children() - {first}
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: children() - before - {first}, 5, "the second process to start")
        await projector.stop()
        assert children() - before == set(), "a projector process outlived stop()"

    asyncio.run(body())
