"""Artifacts: files a step returns. Pure rules shared by the agent (before sending), the
server (before storing) and the shoal-artifact command's own check."""

from __future__ import annotations

import re
import unicodedata

MAX_ARTIFACTS_PER_STEP = 100
MAX_ARTIFACT_BYTES = 100 * 1024 * 1024
MAX_NAME_BYTES = 200

_SHA256 = re.compile(r"[0-9a-f]{64}")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an artifact's name, or None when it can. A name is one path
    component: not empty, not ``.``, no ``..``, no ``/`` or ``\\`` (so no absolute path),
    no control characters, at most MAX_NAME_BYTES bytes."""
    if not name:
        return "the name is empty"
    if name.startswith(("/", "\\")):
        return "absolute paths are not allowed"
    if ".." in name:
        return "'..' is not allowed"
    if "/" in name or "\\" in name:
        return "'/' is not allowed (artifact names are plain file names)"
    if name == ".":
        return "'.' is not a file name"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "control characters are not allowed"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    return None


def is_sha256(value: str) -> bool:
    """A lower-case hex SHA-256."""
    return bool(_SHA256.fullmatch(value))
