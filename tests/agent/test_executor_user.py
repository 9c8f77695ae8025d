"""Running a step as another OS user (the built-in worker's option; needs root)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.support import request, run_step

pytestmark = pytest.mark.integration


@pytest.fixture
def step_user() -> Iterator[pwd.struct_passwd]:
    """A throw-away system user, deleted afterwards."""
    if os.geteuid() != 0:
        reason = "running a step as another user needs root, and these tests do not run as root"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    name = f"shoaltest_{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A folder other users may enter (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="shoal-agent-test-"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_the_step_runs_as_the_user_in_a_folder_only_it_can_read(
    step_user: pwd.struct_passwd, shared_base: Path
) -> None:
    work_root = shared_base / "work"
    script = "\n".join(
        [
            "id -un",
            "id -G",
            'stat -c "%U %a" "$SHOAL_WORK_DIR"',
            'cat "$SHOAL_WORK_DIR/script.sh" > /dev/null && echo readable',
            'touch "$TMPDIR/made" && echo writable',
            'echo "$HOME"',
        ]
    )

    result, log = run_step(request(work_root, script, run_as_user=step_user.pw_name))

    assert result.outcome == "success", log.texts()
    name, groups, owner_mode, readable, writable, home = log.texts("stdout")
    assert name == step_user.pw_name
    assert groups == str(step_user.pw_gid)  # none of the server's supplementary groups
    assert owner_mode == f"{step_user.pw_name} 700"  # other users cannot enter it
    assert (readable, writable) == ("readable", "writable")
    assert home == step_user.pw_dir
    assert list(work_root.iterdir()) == []
    # The work root lets the user reach its own folder but lists nothing to anyone.
    assert stat.S_IMODE(work_root.stat().st_mode) == 0o711


def test_a_step_run_as_the_user_has_shoal_artifact_in_its_own_folder(
    step_user: pwd.struct_passwd, shared_base: Path
) -> None:
    # The package's shared copy may be out of the user's reach: the folder carries one.
    script = 'command -v shoal-artifact; echo hi > a.txt; shoal-artifact a.txt && echo returned'

    result, log = run_step(request(shared_base / "work", script, run_as_user=step_user.pw_name))

    assert result.outcome == "success", log.texts()
    tool, returned = log.texts("stdout")
    assert tool.endswith("/.shoal/bin/shoal-artifact")
    assert returned == "returned"


def test_python_steps_run_as_the_user_with_the_machines_python(
    step_user: pwd.struct_passwd, shared_base: Path
) -> None:
    script = "import getpass, sys\nprint(getpass.getuser())\nprint(sys.executable)"

    result, log = run_step(request(shared_base / "work", script, "python", run_as_user=step_user.pw_name))

    assert result.outcome == "success", log.texts()
    assert log.texts("stdout")[0] == step_user.pw_name


def test_a_work_root_the_user_cannot_reach_fails_the_step_with_the_reason(
    step_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    # pytest's tmp_path lies under /tmp/pytest-of-root, which is 0700.
    work_root = tmp_path / "work"

    result, log = run_step(request(work_root, "true", run_as_user=step_user.pw_name))

    assert (result.outcome, result.exit_code) == ("failed", None)
    assert "cannot reach the work folder" in result.reason
    assert log.texts("system") == [result.reason]
    assert "started" not in log.events
    assert list(work_root.iterdir()) == []
