"""How a step's process is started: as which user, in what environment, with which command.

The environment is built from scratch (none of the runner's own variables reach the step);
the command runs the script file in the working folder with the matching interpreter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import Any

from agent.folders import SCRIPT_FILES, Refused
from agent.ports import StepRequest

__all__ = ["DEFAULT_PATH", "command", "credentials", "environment", "resolve_user"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_user(name: str) -> pwd.struct_passwd:
    """The account a step asked to run as; Refused when there is none, or when this
    process (not root) cannot switch to it."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise Refused(f"cannot run the step as user {name!r}: no such user on this machine") from None
    euid = os.geteuid()
    if euid not in (0, user.pw_uid):
        raise Refused(
            f"cannot run the step as user {name!r}: the worker runs as uid {euid}, "
            "and running steps as another user needs root"
        )
    return user


def credentials(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """The subprocess arguments that switch to ``user`` (none when we already are that user)."""
    if user is None or user.pw_uid == os.geteuid():
        return {}
    # extra_groups=[] drops the server's supplementary groups (root's, e.g. docker).
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def environment(
    request: StepRequest, folder: Path, user: pwd.struct_passwd | None, tools_env: dict[str, str]
) -> dict[str, str]:
    """The step's whole environment: a clean base (none of the server's variables, so no
    secrets leak), the request's variables over it, then the Shoal variables and the
    ``shoal-artifact`` tools folder first on PATH."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": user.pw_dir if user is not None else str(folder),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(folder),
    }
    env.update(request.env)
    env["SHOAL_WORK_DIR"] = str(folder)  # set last: it must name the real folder
    env["SHOAL_ARTIFACTS_DIR"] = tools_env["SHOAL_ARTIFACTS_DIR"]
    env["PATH"] = f"{tools_env['SHOAL_TOOLS_DIR']}:{env['PATH']}"  # shoal-artifact first
    return env


def command(syntax: str, path: str) -> list[str]:
    """The interpreter command; the script is a file in the working folder (the cwd)."""
    script = SCRIPT_FILES[syntax]
    if syntax == "bash":
        return ["/bin/bash", script]
    if syntax == "sh":
        return ["/bin/sh", script]
    # The server's own interpreter may be a virtualenv another user cannot read and which
    # carries the server's packages; user code gets the machine's python3.
    return [shutil.which("python3", path=path) or sys.executable, script]
