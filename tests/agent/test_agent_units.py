"""Pure parts of the agent: log chunking, the health verdict, revocation counting, the
clean-up of what a crashed runner left in its work root."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.execution import chunks
from agent.folders import SMALL_FOLDER_FILES, remove_small, remove_tree
from agent.health import DETAIL_LIMIT, clip, judge
from agent.home import Registration
from agent.leftovers import remove_leftover_folders
from agent.ports import LogLine
from agent.service import AgentConfig, AgentService, AgentSubjects
from domain.signing import public_key_text
from tests.agent.service_support import new_key

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _line(text: str, stream: str = "stdout") -> LogLine:
    return LogLine(AT, stream, text)  # type: ignore[arg-type]


def test_log_batches_are_cut_into_reports_of_bounded_size() -> None:
    lines = [_line("x" * 100) for _ in range(10)]
    got = list(chunks(lines, 400))
    assert [len(c) for c in got] == [2, 2, 2, 2, 2]
    assert got[0][0] == ("2026-01-02T03:04:05.678+00:00", "stdout", "x" * 100)
    # A line longer than the limit still travels, alone.
    assert [len(c) for c in chunks([_line("y" * 1000), _line("z")], 400)] == [1, 1]


def test_only_the_helpers_of_this_run_set_the_health_status() -> None:
    forged = [_line("##shoal-0000:fail:I say so"), _line("fine")]
    assert judge(forged, "1234", True, "").status == "healthy"
    warned = [_line("##shoal-1234:warn:low disk"), _line("##shoal-1234:warn:old kernel")]
    answer = judge(warned, "1234", True, "")
    assert (answer.status, answer.detail) == ("has_warnings", "low disk\nold kernel")
    # A warning on stderr is not the helper's (it prints to stdout).
    assert judge([_line("##shoal-1234:warn:x", "stderr")], "1234", True, "").status == "healthy"
    failed = judge([_line("boom")], "1234", False, "exit code 2")
    assert (failed.status, failed.detail) == ("unhealthy", "exit code 2\nboom")


def test_health_detail_is_clipped_keeping_the_end() -> None:
    text = "a" * 5000 + "END"
    clipped = clip(text)
    assert len(clipped) == DETAIL_LIMIT and clipped.endswith("END")


class _Bus:
    """Only what AgentService's constructor and error counting touch."""

    is_connected = False


def _service(revoked_after: int = 3) -> AgentService:
    reg = Registration("http://s", "w1", "n", "listening", 1, ("nats://x",), "u", "p", "_INBOX_w1",
                       "work_w1", public_key_text(new_key()))
    subjects = AgentSubjects("e", "c", "h", "r", "hb", "S", "work_w1")
    return AgentService(reg, _Bus(), None, AgentConfig(Path("/nonexistent"), revoked_after=revoked_after),  # type: ignore[arg-type]
                        subjects)


def test_only_repeated_authorization_violations_mean_revocation() -> None:
    service = _service()
    for _ in range(5):
        service._on_bus_error(OSError("connection refused"))
        service._on_bus_error(Exception("nats: permissions violation for publish to x"))
    assert not service._revoked.is_set()
    service._on_bus_error(Exception("nats: 'Authorization Violation'"))
    service._on_bus_error(Exception("nats: 'Authorization Violation'"))
    assert not service._revoked.is_set()
    service._on_bus_error(Exception("nats: 'Authorization Violation'"))
    assert service._revoked.is_set()


def test_leftover_step_and_artifact_staging_folders_are_removed(tmp_path: Path) -> None:
    for name in ("step-abc", "artifacts-def", "artifacts-inbox-like", "keep", "stepping"):
        (tmp_path / name / "inner").mkdir(parents=True)
    assert remove_leftover_folders(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "stepping"]
    assert remove_leftover_folders(tmp_path / "missing") == 0


def test_a_folder_of_a_few_files_is_removed_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "step-a"
    folder.mkdir()
    for name in ("script.sh", "out.txt"):
        (folder / name).write_text("x")
    assert remove_small(folder) is True
    assert not folder.exists()


@pytest.mark.parametrize("extra", ["subfolder", "link", "many files"])
def test_a_folder_with_more_in_it_is_left_whole_for_remove_tree(tmp_path: Path, extra: str) -> None:
    folder = tmp_path / "step-b"
    folder.mkdir()
    (folder / "script.sh").write_text("x")
    if extra == "subfolder":
        (folder / "dist").mkdir()
    elif extra == "link":
        (folder / "here").symlink_to(folder)
    else:
        for i in range(SMALL_FOLDER_FILES):
            (folder / f"f{i}").write_text("x")
    before = sorted(p.name for p in folder.iterdir())

    assert remove_small(folder) is False
    assert sorted(p.name for p in folder.iterdir()) == before
    remove_tree(folder)
    assert not folder.exists()
