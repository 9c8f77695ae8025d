"""Stopping steps on real processes: timeouts, cancels, processes a step leaves behind,
signals, and errors of the caller. Nothing of a step's process group may outlive it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.executor import LogLine, StepExecutor, StepResult
from tests.agent.support import Recorder, group_exists, process_exists, request, run_step, timed
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

# A main process that waits on a grandchild; the grandchild's pid comes first on stdout.
WAITS_ON_GRANDCHILD = 'sleep 300 &\necho "child $!"\nwait'


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "work"


def child_pid(log: Recorder) -> int:
    return int(next(text for text in log.texts("stdout") if text.startswith("child "))[6:])


def is_child_line(line: LogLine) -> bool:
    return line.text.startswith("child ")


def assert_all_gone(log: Recorder) -> None:
    assert not process_exists(child_pid(log))
    assert not group_exists(log.pid)


def test_a_timeout_kills_the_whole_group(work_root: Path) -> None:
    (result, log), seconds = timed(lambda: run_step(request(work_root, WAITS_ON_GRANDCHILD, timeout_s=0.5)))

    print(f"timed out and cleaned up in {seconds:.2f}s")
    assert (result.outcome, result.reason) == ("timed_out", "timed out after 0.5s")
    assert log.texts("system") == ["timed out after 0.5s; killed"]
    assert_all_gone(log)
    assert seconds < 8
    assert list(work_root.iterdir()) == []


def test_a_group_that_ignores_sigterm_gets_sigkill_after_the_grace(work_root: Path) -> None:
    script = "trap '' TERM\n" + WAITS_ON_GRANDCHILD
    executor = StepExecutor(kill_grace=0.3)

    (result, log), seconds = timed(lambda: run_step(request(work_root, script, timeout_s=0.3), executor))

    print(f"SIGTERM ignored; killed and cleaned up in {seconds:.2f}s")
    assert result.outcome == "timed_out"
    assert result.exit_code is None  # SIGKILL ended it
    assert_all_gone(log)
    assert seconds < 8


def test_cancel_kills_the_whole_group(work_root: Path) -> None:
    (result, log), seconds = timed(
        lambda: run_step(request(work_root, WAITS_ON_GRANDCHILD), cancel_when=is_child_line)
    )

    print(f"cancelled and cleaned up in {seconds:.2f}s")
    assert (result.outcome, result.reason) == ("cancelled", "cancelled")
    assert log.texts("system") == ["cancelled"]
    assert_all_gone(log)
    assert seconds < 8
    assert list(work_root.iterdir()) == []


def test_a_step_cancelled_before_it_starts_starts_nothing(work_root: Path) -> None:
    async def main() -> tuple[StepResult, Recorder]:
        cancel = asyncio.Event()
        cancel.set()
        log = Recorder()
        result = await StepExecutor().run(request(work_root, "exit 1"), log, cancel, log.started)
        return result, log

    result, log = asyncio.run(main())

    assert result == StepResult("cancelled", None, "cancelled")
    assert log.events == ["batch"]
    assert log.texts("system") == ["cancelled"]


def test_processes_left_behind_by_a_successful_step_are_stopped(work_root: Path) -> None:
    # No `wait`: the script exits at once, its grandchild would live on (and hold stdout).
    result, log = run_step(request(work_root, 'sleep 300 &\necho "child $!"'))

    assert result.outcome == "success"
    assert log.texts("system") == ["the step left processes running; stopping them"]
    assert_all_gone(log)


def test_output_held_open_by_an_escaped_process_stops_being_read(work_root: Path) -> None:
    # A new session leaves the step's process group, so only the pipes still tie it to the
    # step. (Popen returns after the exec, so the child has left the group by then.)
    script = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        "print('child', p.pid)"
    )
    log = Recorder()

    (result, _), seconds = timed(
        lambda: run_step(request(work_root, script, "python"), StepExecutor(kill_grace=0.3), log)
    )

    try:
        assert result.outcome == "success"
        assert log.texts("system") == [
            "stopped reading output: a process that left the step's process group still holds it open"
        ]
        assert seconds < 5
        assert list(work_root.iterdir()) == []
    finally:
        os.kill(child_pid(log), signal.SIGKILL)


@pytest.mark.parametrize(
    ("script", "reason"),
    [("kill -KILL $$", "killed by signal SIGKILL"), ("kill -SEGV $$", "killed by signal SIGSEGV")],
)
def test_a_signal_the_executor_did_not_send_fails_the_step(work_root: Path, script: str, reason: str) -> None:
    result, _ = run_step(request(work_root, script))

    assert (result.outcome, result.exit_code, result.reason) == ("failed", None, reason)


def test_the_folder_is_removed_whatever_the_outcome(work_root: Path) -> None:
    outcomes = {
        run_step(request(work_root, "exit 1"))[0].outcome,
        run_step(request(work_root, "sleep 30", timeout_s=0.2))[0].outcome,
        run_step(request(work_root, WAITS_ON_GRANDCHILD), cancel_when=is_child_line)[0].outcome,
        run_step(request(work_root, "true"))[0].outcome,
    }

    assert outcomes == {"failed", "timed_out", "cancelled", "success"}
    assert list(work_root.iterdir()) == []


# -- errors of the caller -------------------------------------------------------------------------


def test_a_failing_sink_stops_the_step_and_its_error_propagates(work_root: Path) -> None:
    seen: list[LogLine] = []

    async def sink(batch: Sequence[LogLine]) -> None:
        seen.extend(batch)
        if any(is_child_line(line) for line in batch):
            raise ConnectionError("store down")

    with pytest.raises(ConnectionError, match="store down"):
        asyncio.run(StepExecutor(flush_interval=0).run(request(work_root, WAITS_ON_GRANDCHILD), sink))

    grandchild = int(next(line.text for line in seen if is_child_line(line))[6:])
    wait_until(lambda: not process_exists(grandchild), what="the grandchild to die")
    assert list(work_root.iterdir()) == []


def test_a_failing_on_started_stops_the_step_and_its_error_propagates(work_root: Path) -> None:
    pids: list[int] = []

    async def on_started(pid: int, at: object = None) -> None:
        pids.append(pid)
        raise RuntimeError("could not record StepStarted")

    async def main() -> None:
        await StepExecutor().run(request(work_root, "sleep 300"), Recorder(), on_started=on_started)

    with pytest.raises(RuntimeError, match="could not record StepStarted"):
        asyncio.run(main())

    wait_until(lambda: not group_exists(pids[0]), timeout=10, what="the group to be gone")
    assert list(work_root.iterdir()) == []


def test_cancelling_the_running_coroutine_kills_the_group_and_reraises(work_root: Path) -> None:
    log = Recorder()

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        def cancel_on_child_line(line: LogLine) -> None:
            if is_child_line(line):
                task.cancel()

        log.on_line = cancel_on_child_line
        executor = StepExecutor(flush_interval=0)
        await executor.run(request(work_root, WAITS_ON_GRANDCHILD), log, None, log.started)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())

    wait_until(lambda: not process_exists(child_pid(log)), what="the grandchild to die")
    wait_until(lambda: not group_exists(log.pid), timeout=10, what="the group to be gone")
    assert list(work_root.iterdir()) == []


def test_an_unknown_user_fails_the_step_without_starting_anything(work_root: Path) -> None:
    result, log = run_step(request(work_root, "true", run_as_user="shoal-no-such-user-x7"))

    assert (result.outcome, result.exit_code) == ("failed", None)
    assert result.reason == (
        "cannot run the step as user 'shoal-no-such-user-x7': no such user on this machine"
    )
    assert log.texts("system") == [result.reason]
    assert "started" not in log.events
    assert not work_root.exists() or list(work_root.iterdir()) == []
