"""The step executor on real processes: interpreters and exit codes, the clean
environment, the working folder, and how output becomes batches of log lines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.artifacts import SHARED_TOOLS_DIR
from agent.executor import DEFAULT_PATH, LogLine, StepExecutor
from tests.agent.support import STEP_ENV, Recorder, request, run_step, timed

pytestmark = pytest.mark.integration

EXIT = {"bash": "exit {code}", "sh": "exit {code}", "python": "import sys\nsys.exit({code})"}


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "work"


# -- interpreters and exit codes --------------------------------------------------------------


@pytest.mark.parametrize("syntax", ["bash", "sh", "python"])
@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_decides_the_outcome(work_root: Path, syntax: str, code: int) -> None:
    result, _ = run_step(request(work_root, EXIT[syntax].format(code=code), syntax))

    if code == 0:
        assert (result.outcome, result.exit_code, result.reason) == ("success", 0, "")
    else:
        assert (result.outcome, result.exit_code, result.reason) == ("failed", 3, "exit code 3")


def test_each_syntax_runs_in_its_own_interpreter(work_root: Path) -> None:
    _, bash = run_step(request(work_root, 'echo "${BASH_VERSION:+bash}"; echo "$0"', "bash"))
    _, sh = run_step(request(work_root, 'echo "${BASH_VERSION:-not bash}"; echo "$0"', "sh"))
    _, py = run_step(request(work_root, "import sys\nprint(sys.executable)\nprint(sys.argv[0])", "python"))

    assert bash.texts() == ["bash", "script.sh"]
    assert sh.texts() == ["not bash", "script.sh"]
    # The machine's python3 (found on the step's PATH), not the server's virtualenv.
    assert py.texts() == [shutil.which("python3", path=DEFAULT_PATH) or sys.executable, "script.py"]


def test_unknown_syntax_is_refused_before_anything_runs(work_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown script syntax 'ruby'"):
        request(work_root, "puts 1", "ruby")
    with pytest.raises(ValueError, match="invalid environment variable"):
        request(work_root, "true", env={"A=B": "x"})
    assert not work_root.exists()


# -- environment -------------------------------------------------------------------------------


def test_the_script_sees_a_clean_environment_and_the_step_variables(
    work_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_SECRET_TEST", "hunter2")
    script = "import json, os\nprint(json.dumps(dict(os.environ)))"

    result, log = run_step(request(work_root, script, "python"))

    assert result.outcome == "success"
    env = json.loads(log.texts("stdout")[0])
    folder = env["SHOAL_WORK_DIR"]
    assert env == {
        **STEP_ENV,
        # shoal-artifact comes first on the PATH: the package's own copy (a step run as
        # another user gets one in its folder, tests/agent/test_executor_user.py).
        "PATH": f"{SHARED_TOOLS_DIR}:{DEFAULT_PATH}",
        "SHOAL_ARTIFACTS_DIR": f"{folder}/.shoal/artifacts",
        "HOME": folder,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": folder,
        "SHOAL_WORK_DIR": folder,
    }
    assert "hunter2" not in log.texts("stdout")[0]


def test_request_variables_override_the_defaults_but_not_the_work_dir(work_root: Path) -> None:
    env = {**STEP_ENV, "LANG": "de_DE.UTF-8", "SHOAL_WORK_DIR": "/elsewhere"}

    _, log = run_step(request(work_root, 'echo "$LANG"; echo "$SHOAL_WORK_DIR"; pwd', env=env))

    lang, work_dir, cwd = log.texts("stdout")
    assert lang == "de_DE.UTF-8"
    assert work_dir == cwd != "/elsewhere"


# -- working folder ----------------------------------------------------------------------------


def test_the_step_runs_in_a_fresh_private_folder_that_is_removed_afterwards(work_root: Path) -> None:
    script = 'pwd; stat -c %a .; echo "$SHOAL_WORK_DIR"; ls -A; echo data > made.txt'

    first, log1 = run_step(request(work_root, script))
    second, log2 = run_step(request(work_root, script))

    assert first.outcome == second.outcome == "success"
    cwd1, mode, work_dir, *listing = log1.texts("stdout")
    cwd2 = log2.texts("stdout")[0]
    assert cwd1 == work_dir
    assert Path(cwd1).parent == work_root
    assert cwd1 != cwd2
    assert mode == "700"
    # The script is a file there; nothing else (shoal-artifact makes its folder on use).
    assert listing == ["script.sh"]
    assert not Path(cwd1).exists()
    assert list(work_root.iterdir()) == []


def test_a_missing_work_root_is_created_private(tmp_path: Path) -> None:
    work_root = tmp_path / "deeper" / "work"

    result, _ = run_step(request(work_root, "true"))

    assert result.outcome == "success"
    assert stat.S_IMODE(work_root.stat().st_mode) == 0o700


def test_read_only_leftovers_are_removed_too(work_root: Path) -> None:
    script = "mkdir -p ro/sub && touch ro/sub/f && chmod 400 ro/sub/f && chmod 500 ro/sub ro && chmod 500 ."

    result, _ = run_step(request(work_root, script))

    assert result.outcome == "success"
    assert list(work_root.iterdir()) == []


# -- output --------------------------------------------------------------------------------------


def test_stdout_and_stderr_lines_are_marked_and_in_order_per_stream(work_root: Path) -> None:
    script = (
        "import sys\nfor i in range(50):\n    print(f'out {i}')\n    print(f'err {i}', file=sys.stderr)\n"
    )

    _, log = run_step(request(work_root, script, "python"))

    assert log.texts("stdout") == [f"out {i}" for i in range(50)]
    assert log.texts("stderr") == [f"err {i}" for i in range(50)]
    assert {line.stream for line in log.lines} == {"stdout", "stderr"}
    stamps = [line.at for line in log.lines]
    assert all(at.tzinfo is not None and at.utcoffset() is not None for at in stamps)
    assert not any(at.utcoffset() for at in stamps)
    assert stamps == sorted(stamps)


def test_line_endings_empty_lines_bad_utf8_and_a_last_line_without_newline(work_root: Path) -> None:
    _, log = run_step(request(work_root, r"printf 'crlf\r\n\nbad \377\376 end\nlast'"))

    assert log.texts() == ["crlf", "", "bad \ufffd\ufffd end", "last"]


def test_many_lines_arrive_complete_in_order_in_few_batches(work_root: Path) -> None:
    (result, log), seconds = timed(lambda: run_step(request(work_root, "seq 1 100000")))

    print(f"100,000 lines in {seconds:.2f}s, {len(log.batches)} sink calls")
    assert result.outcome == "success"
    assert log.texts("stdout") == [str(i) for i in range(1, 100_001)]
    assert len(log.batches) < 1000
    assert max(len(batch) for batch in log.batches) <= 1000  # flush_lines caps a batch
    assert seconds < 30


def test_a_batch_goes_out_after_flush_interval_while_the_step_still_runs(work_root: Path) -> None:
    script = "import time\nprint('first')\ntime.sleep(0.5)\nprint('second')"

    _, log = run_step(request(work_root, script, "python"), StepExecutor(flush_interval=0.05))

    assert [[line.text for line in batch] for batch in log.batches] == [["first"], ["second"]]


def test_flush_lines_caps_each_batch_and_the_rest_goes_out_at_the_end(work_root: Path) -> None:
    executor = StepExecutor(flush_interval=60, flush_lines=10)

    (_, log), seconds = timed(lambda: run_step(request(work_root, "seq 1 25"), executor))

    assert [len(batch) for batch in log.batches] == [10, 10, 5]
    assert seconds < 5  # the end flush does not wait for the interval


def test_a_slow_sink_gets_one_batch_at_a_time_and_loses_nothing(work_root: Path) -> None:
    in_flight = 0
    most = 0
    received: list[str] = []

    async def slow_sink(batch: Sequence[LogLine]) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        received.extend(line.text for line in batch)
        in_flight -= 1

    async def main() -> None:
        executor = StepExecutor(flush_interval=0.01, flush_lines=100)
        result = await executor.run(request(work_root, "seq 1 5000"), slow_sink)
        assert result.outcome == "success"

    asyncio.run(main())

    assert most == 1
    assert received == [str(i) for i in range(1, 5001)]


def test_on_started_gets_the_pid_which_is_the_process_group_before_any_batch(work_root: Path) -> None:
    script = "import os\nprint(os.getpid(), os.getpgrp(), os.getsid(0))"

    _, log = run_step(request(work_root, script, "python"))

    pid, pgid, sid = map(int, log.texts("stdout")[0].split())
    assert log.pid == pid == pgid == sid
    assert log.events[0] == "started"


def test_on_started_gets_the_moment_the_program_began(work_root: Path) -> None:
    """Taken as fork and exec return: after the step was asked for, and before anything
    the program printed was read."""
    asked = datetime.now(UTC)

    _, log = run_step(request(work_root, "echo hello"))

    assert asked <= log.started_at <= log.lines[0].at


# -- limits ----------------------------------------------------------------------------------------


def test_a_long_line_is_cut_with_a_marker(work_root: Path) -> None:
    script = "import sys\nsys.stdout.write('x' * 200_000 + '\\nafter\\n')"

    result, log = run_step(request(work_root, script, "python"))

    assert result.outcome == "success"
    assert log.texts() == ["x" * 65536 + " …[line truncated at 65536 bytes]", "after"]


def test_a_cut_does_not_split_a_utf8_character(work_root: Path) -> None:
    script = "print('é' * 1000)\nprint('ok')"

    _, log = run_step(request(work_root, script, "python", max_line_bytes=101))

    assert log.texts() == ["é" * 50 + " …[line truncated at 101 bytes]", "ok"]


def test_a_megabyte_without_newline_is_one_cut_line(work_root: Path) -> None:
    script = "import sys\nsys.stdout.write('y' * 1_000_000)\nsys.stderr.write('done')"

    result, log = run_step(request(work_root, script, "python"))

    assert result.outcome == "success"
    assert log.texts("stdout") == ["y" * 65536 + " …[line truncated at 65536 bytes]"]
    assert log.texts("stderr") == ["done"]


def test_a_ten_megabyte_line_is_not_held_in_memory(work_root: Path) -> None:
    script = "import sys\nfor _ in range(40):\n    sys.stdout.write('z' * 250_000)"
    tracemalloc.start()
    try:
        result, log = run_step(request(work_root, script, "python"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    print(f"peak traced memory for a 10 MB line: {peak / 1e6:.1f} MB")
    assert result.outcome == "success"
    assert log.texts() == ["z" * 65536 + " …[line truncated at 65536 bytes]"]
    assert peak < 4_000_000


def test_past_max_log_bytes_output_is_discarded_with_one_marker_and_the_exit_code_counts(
    work_root: Path,
) -> None:
    # 2000 lines of 100 bytes (with newline): far more than the pipe holds, so this also
    # shows the pipes are drained after the cap (or the script would block forever).
    script = (
        "import sys\n"
        "for i in range(2000):\n"
        "    print('z' * 99)\n"
        "    print('e' * 99, file=sys.stderr)\n"
        "sys.exit(5)\n"
    )

    result, log = run_step(request(work_root, script, "python", max_log_bytes=10_000))

    assert (result.outcome, result.exit_code, result.reason) == ("failed", 5, "exit code 5")
    system = [line for line in log.lines if line.stream == "system"]
    assert [line.text for line in system] == [
        "log truncated: the step wrote more than 10000 bytes; further output is discarded"
    ]
    kept = [line for line in log.lines if line.stream != "system"]
    assert len(kept) == 100  # exactly 10,000 bytes
    assert log.lines[-1] == system[0]


# -- many steps -------------------------------------------------------------------------------------


def test_steps_are_cheap_and_concurrent_steps_do_not_mix(work_root: Path) -> None:
    async def sequential(n: int, script: str) -> float:
        executor = StepExecutor()
        start = time.perf_counter()
        for _ in range(n):
            result = await executor.run(request(work_root, script), Recorder())
            assert result.outcome == "success"
        return (time.perf_counter() - start) / n

    async def concurrent(n: int) -> tuple[float, list[Recorder]]:
        executor = StepExecutor()
        logs = [Recorder() for _ in range(n)]
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                executor.run(request(work_root, 'echo "$SHOAL_TASK_ID"', env={"SHOAL_TASK_ID": f"t{i}"}), log)
                for i, log in enumerate(logs)
            )
        )
        assert {r.outcome for r in results} == {"success"}
        return (time.perf_counter() - start) / n, logs

    true_step = asyncio.run(sequential(50, "true"))
    echo_step = asyncio.run(sequential(20, "echo hi"))
    parallel, logs = asyncio.run(concurrent(100))

    print(
        f"per step: `true` {true_step * 1000:.1f} ms sequential; `echo hi` {echo_step * 1000:.1f} ms "
        f"sequential; {parallel * 1000:.1f} ms each with 100 concurrent ({os.cpu_count()} cores)"
    )
    assert [log.texts() for log in logs] == [[f"t{i}"] for i in range(100)]
    assert list(work_root.iterdir()) == []
    # Not a benchmark: a loose bound that catches a sleep or a flush_interval wait on the
    # hot path (those cost >= 100 ms per step).
    assert true_step < 0.08
    assert echo_step < 0.08
