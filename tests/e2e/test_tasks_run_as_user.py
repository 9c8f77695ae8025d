"""The built-in worker's run_as_user: steps run as another OS user (needs root)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tasks_support import OptionServer, lines_of, log, script, served, wait_task

pytestmark = pytest.mark.e2e


@pytest.fixture
def os_user() -> Iterator[str]:
    """A throw-away system user, removed afterwards."""
    if os.geteuid() != 0:
        reason = "run_as_user needs root to create a throw-away OS user; this run is not root"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    name = f"shoal_e2e_{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def srv(request: pytest.FixtureRequest, os_user: str) -> Iterator[OptionServer]:
    """A server whose data folder another user may pass through (pytest's own temporary
    folders are 0700, which the server rightly refuses for a step run as another user)."""
    base = Path(tempfile.mkdtemp(prefix="shoal-e2e-runas-"))
    try:
        base.chmod(0o711)
        with served(request, base / "data") as s:
            yield s
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_built_in_worker_runs_steps_as_another_user(srv: OptionServer, os_user: str) -> None:
    with srv.client() as c:
        r = c.patch("/api/configuration/built-in-worker", json={"run_as_user": os_user})
        try:
            assert r.status_code == 200 and r.json()["run_as_user"] == os_user, r.text
            assert c.get("/api/configuration/built-in-worker").json()["run_as_user"] == os_user
            body = 'id -un; stat -c "%U %a" .; touch ok && echo "can write"; echo "$SHOAL_WORK_DIR"'
            t = wait_task(c, script(c, body)["id"])
            text = log(c, t["id"])
        finally:
            cleared = c.patch("/api/configuration/built-in-worker", json={"run_as_user": ""})
        assert cleared.status_code == 200 and cleared.json()["run_as_user"] in (None, "")
        assert c.get("/api/configuration/built-in-worker").json()["run_as_user"] in (None, "")
        back = wait_task(c, script(c, "id -un")["id"])
        back_log = log(c, back["id"])
    assert t["state"] == "success", text
    user, folder, wrote, workdir = lines_of(text, "Run script")
    assert (user, folder, wrote) == (os_user, f"{os_user} 700", "can write")
    assert not Path(workdir).exists(), "the other user's folder is removed afterwards"
    assert back["state"] == "success" and lines_of(back_log, "Run script") == ["root"]
