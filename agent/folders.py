"""A step's working folder: made fresh for each step, removed afterwards whatever happened.

The folder (``step-*`` under the work root) is 0700 and holds the script; when the step runs
as another user it is that user's, and the work root is made reachable for it. Removing it
copes with what a step may leave behind (read-only files and folders); a folder holding only
files takes a fast path. Folders a crashed run left behind are agent/leftovers.py's business.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.ports import StepRequest

__all__ = ["SCRIPT_FILES", "Refused", "make_folder", "remove_small", "remove_tree"]

# remove_small takes a folder with at most this many plain files (and nothing else).
SMALL_FOLDER_FILES = 8

log = logging.getLogger(__name__)

# The script's file name in the folder, by syntax.
SCRIPT_FILES = {"bash": "script.sh", "sh": "script.sh", "python": "script.py"}


class Refused(Exception):
    """The step cannot run as asked; the message says why (it goes to the task log)."""


def make_folder(request: StepRequest, user: pwd.struct_passwd | None) -> Path:
    """Create the step's working folder with the script in it; owned by ``user`` if given."""
    root = request.work_root.absolute()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is not None and user.pw_uid != os.geteuid():
        _let_through(root, user)
    folder = Path(tempfile.mkdtemp(prefix="step-", dir=root))
    try:
        script = folder / SCRIPT_FILES[request.syntax]
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(request.script.encode("utf-8", "surrogateescape"))
        if user is not None:
            os.chown(script, user.pw_uid, user.pw_gid)
            os.chown(folder, user.pw_uid, user.pw_gid)
    except BaseException:
        remove_tree(folder)
        raise
    return folder


def _let_through(root: Path, user: pwd.struct_passwd) -> None:
    """Make sure ``user`` can reach folders inside ``root`` by absolute path ($TMPDIR,
    $SHOAL_WORK_DIR): ``root`` gets search-only permission (0711: enter, not list; each
    step folder is 0700 and its user's own), and every folder above it must allow it."""
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o011 != 0o011:
        root.chmod(mode | 0o011)
    for folder in [root.resolve(), *root.resolve().parents]:
        st = folder.stat()
        # The kernel checks only the first class that matches: owner, else group, else others.
        # The step runs with its primary group only (extra_groups=[]).
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise Refused(
                f"cannot run the step as user {user.pw_name!r}: it cannot reach the work folder "
                f"{root} because {folder} is not searchable by it; let other users enter "
                f"{folder} (chmod o+x) or keep the data folder under folders they may enter"
            )


def remove_tree(folder: Path) -> None:
    """Remove a step's folder, including what the step made read-only; never raises."""
    if _remove_flat(folder):
        return
    tried: set[str] = set()

    def retry(func: Callable[..., Any], path: str, _exc: object) -> None:
        if path in tried or not os.path.lexists(path):
            if os.path.lexists(path):
                log.warning("could not remove %s from the step folder (%s failed)", path, func.__name__)
            return
        tried.add(path)
        try:
            if path != str(folder):
                os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                _rmtree(path, retry)
            else:
                os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s from the step folder: %s", path, exc)

    _rmtree(str(folder), retry)


def remove_small(folder: Path) -> bool:
    """Remove the folder if it holds only a few plain files (what most steps leave: their
    script): cheaper than handing the removal to a thread. False, with nothing removed,
    when it holds more or anything else; remove_tree is then for it."""
    try:
        with os.scandir(folder) as entries:
            files: list[str] = []
            for entry in entries:
                if len(files) == SMALL_FOLDER_FILES or not entry.is_file(follow_symlinks=False):
                    return False
                files.append(entry.path)
        for path in files:
            os.unlink(path)
        os.rmdir(folder)
    except OSError:
        return False
    return True


def _remove_flat(folder: Path | str, depth: int = 0) -> bool:
    """The common case cheaply: a small tree of ordinary permissions (the script, the
    tools folder, some output), removed with one scandir per folder, where rmtree's
    descriptor-safe walk costs several times more. False (what is left stays) on anything
    unusual — a deep tree, a read-only folder — so the careful path finishes the job."""
    if depth > 3:
        return False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if not _remove_flat(entry.path, depth + 1):
                        return False
                else:
                    os.unlink(entry.path)
        os.rmdir(folder)
    except OSError:
        return False
    return True


def _rmtree(path: str, handler: Callable[[Callable[..., Any], str, object], None]) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=handler)
    else:
        shutil.rmtree(path, onerror=handler)

