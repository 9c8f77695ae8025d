"""The pipe between the server and its built-in worker process: framing and codec.

Both sides of ``agent/builtin.py`` (the worker) and ``adapters/dispatch/builtin.py`` (the
server's handle on it) speak through this module only, so the wire format lives in one place.
The projector process (``adapters/projector.py``) uses the same framing for its own ops.

A frame is a 4-byte big-endian length followed by that many bytes of JSON (orjson): an
object whose ``op`` says what it is. The ops, by direction:

server -> worker
    ``run {id, request, artifacts}``: run a step (``id`` is the server's, never reused);
    ``cancel {id}``: stop it, outcome "cancelled"; ``abort {id}``: kill it at once, no
    result (as when an in-process run is cancelled); ``answer {q, ok, error?}``: the
    answer to the worker's ask ``q``.
worker -> server
    ``ready {pid, protocol}``; ``started {id, pid, at}``; ``finished {id, outcome, exit_code,
    reason}``, ``aborted {id}`` or ``error {id, error}``: exactly one of these ends a run;
    asks, each awaiting its ``answer``: ``log {q, id, lines}``, ``artifact {q, id, name,
    size, sha256, path}``, ``fetch {q, sha256, path}``; ``drop {q}``: the worker no longer
    waits for that answer (its step was aborted), so the server may stop fetching.

Frames of one run are handled in order; different runs never wait on each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import orjson

from agent.ports import LogLine, PackageFile, StepRequest, StepResult

PROTOCOL = 1

# Far above any frame a healthy peer sends (log frames are cut at LOG_FRAME_BYTES); a
# length past it means the stream is corrupt, and a corrupt stream cannot be resynchronised.
MAX_FRAME = 64 * 1024 * 1024
# Where a log batch is cut into several frames (estimated before encoding; JSON escaping
# can make a frame up to six times larger, still far below MAX_FRAME).
LOG_FRAME_BYTES = 4 * 1024 * 1024

Frame = dict[str, Any]

_STREAMS = frozenset({"stdout", "stderr", "system"})
_OUTCOMES = frozenset({"success", "failed", "timed_out", "cancelled"})


class MalformedFrame(ValueError):
    """A frame that cannot be understood (the message says why); it is refused."""


class BrokenPipeStream(Exception):
    """The byte stream cannot be framed any more (a length past MAX_FRAME)."""


def encode(frame: Mapping[str, Any]) -> bytes:
    """One frame, ready to write."""
    body = orjson.dumps(frame)
    return len(body).to_bytes(4, "big") + body


def decode(body: bytes) -> Frame:
    """The frame in ``body``; MalformedFrame unless it is a JSON object with a string op."""
    try:
        frame = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        raise MalformedFrame("not an object with an op")
    return frame


class FrameReader:
    """Cuts a byte stream into frame bodies, however the reads split it."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """The bodies of the frames ``data`` completed, in order; BrokenPipeStream when a
        length is past the limit (nothing after it can be trusted)."""
        buf = self._buf
        buf += data
        bodies: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            size = int.from_bytes(buf[pos:pos + 4], "big")
            if size > self._max:
                raise BrokenPipeStream(f"a frame of {size} bytes is announced; at most {self._max}")
            if end - pos - 4 < size:
                break
            bodies.append(bytes(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]  # once per read, not once per frame
        return bodies

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buf)


def protect_stdout() -> int:
    """For a process that writes frames on its stdout: a private copy of stdout for the
    frames, and fd 1 pointed at stderr, so that nothing else written to stdout (a stray
    print, a library's warning) can corrupt the frame stream. Returns the frames' fd."""
    frames_fd = os.dup(1)  # not inherited by child processes (os.dup makes it non-inheritable)
    os.dup2(2, 1)
    return frames_fd


# -- fields ------------------------------------------------------------------------------------


def number(frame: Mapping[str, Any], key: str) -> int:
    """An integer field (not a bool); MalformedFrame otherwise."""
    value = frame.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedFrame(f"{frame.get('op')}: {key} must be an integer")
    return value


def text(frame: Mapping[str, Any], key: str) -> str:
    """A string field; MalformedFrame otherwise."""
    value = frame.get(key)
    if not isinstance(value, str):
        raise MalformedFrame(f"{frame.get('op')}: {key} must be a string")
    return value


# -- step requests -----------------------------------------------------------------------------


def request_to_wire(request: StepRequest) -> Frame:
    """A StepRequest as JSON-ready data."""
    return {
        "task_id": request.task_id,
        "step_name": request.step_name,
        "syntax": request.syntax,
        "script": request.script,
        "env": dict(request.env),
        "work_root": str(request.work_root.absolute()),  # the same folder whatever the cwd
        "timeout_s": request.timeout_s,
        "run_as_user": request.run_as_user,
        "max_line_bytes": request.max_line_bytes,
        "max_log_bytes": request.max_log_bytes,
        "packages": [[p.id, p.version, p.sha256, p.file_name] for p in request.packages],
    }


def request_from_wire(data: object) -> StepRequest:
    """The StepRequest ``data`` holds; MalformedFrame when it does not hold a valid one."""
    if not isinstance(data, dict):
        raise MalformedFrame("run: request must be an object")
    try:
        env = data["env"]
        packages = data["packages"]
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise MalformedFrame("run: env must map strings to strings")
        if not isinstance(packages, list) or not all(
            isinstance(p, list) and len(p) == 4 and all(isinstance(x, str) for x in p)
            for p in packages
        ):
            raise MalformedFrame("run: packages must be [id, version, sha256, file_name] lists")
        for key in ("task_id", "step_name", "syntax", "script", "work_root"):
            if not isinstance(data[key], str):
                raise MalformedFrame(f"run: {key} must be a string")
        for key in ("max_line_bytes", "max_log_bytes"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise MalformedFrame(f"run: {key} must be an integer")
        timeout_s, user = data["timeout_s"], data["run_as_user"]
        if timeout_s is not None and (not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool)):
            raise MalformedFrame("run: timeout_s must be a number or null")
        if user is not None and not isinstance(user, str):
            raise MalformedFrame("run: run_as_user must be a string or null")
        return StepRequest(
            task_id=data["task_id"], step_name=data["step_name"], syntax=data["syntax"],
            script=data["script"], env=env, work_root=Path(data["work_root"]),
            timeout_s=timeout_s, run_as_user=user, max_line_bytes=data["max_line_bytes"],
            max_log_bytes=data["max_log_bytes"],
            packages=tuple(PackageFile(*cast("list[str]", p)) for p in packages),
        )
    except KeyError as exc:
        raise MalformedFrame(f"run: request has no {exc.args[0]}") from None
    except ValueError as exc:  # StepRequest's own checks
        raise MalformedFrame(f"run: {exc}") from None


# -- log lines, results ----------------------------------------------------------------------


def moment(frame: Mapping[str, Any], key: str) -> datetime | None:
    """A time field (RFC 3339, with its zone), or None when it is absent; MalformedFrame
    when it is something else."""
    value = frame.get(key)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise MalformedFrame(f"{frame.get('op')}: {key} must be a time with its zone")
    return at


def lines_to_wire(lines: Sequence[LogLine]) -> list[list[Any]]:
    """Log lines as ``[at, stream, text]`` (orjson writes the datetime as RFC 3339)."""
    return [[line.at, line.stream, line.text] for line in lines]


def lines_from_wire(data: object) -> list[LogLine]:
    """The log lines ``data`` holds; MalformedFrame when it is not a list of them."""
    if not isinstance(data, list):
        raise MalformedFrame("log: lines must be a list")
    try:
        lines = [LogLine(datetime.fromisoformat(at), stream, body) for at, stream, body in data]
    except (TypeError, ValueError) as exc:
        raise MalformedFrame(f"log: lines must be [time, stream, text] lists: {exc}") from None
    for line in lines:
        if line.stream not in _STREAMS or not isinstance(line.text, str) or line.at.tzinfo is None:
            raise MalformedFrame("log: a line has an unknown stream, no text or a naive time")
    return lines


def log_chunks(lines: Sequence[LogLine], limit: int = LOG_FRAME_BYTES) -> Iterator[Sequence[LogLine]]:
    """``lines`` in consecutive slices of about ``limit`` bytes of text at most (at least
    one line each), so that no log frame comes near MAX_FRAME; usually one slice."""
    start, size = 0, 0
    for index, line in enumerate(lines):
        weight = len(line.text) + 48  # the time, the stream and the brackets
        if size + weight > limit and index > start:
            yield lines[start:index]
            start, size = index, 0
        size += weight
    if start < len(lines):
        yield lines[start:] if start else lines


def result_to_wire(result: StepResult) -> Frame:
    """The fields of a ``finished`` frame."""
    return {"outcome": result.outcome, "exit_code": result.exit_code, "reason": result.reason}


def result_from_wire(frame: Mapping[str, Any]) -> StepResult:
    """The StepResult of a ``finished`` frame; MalformedFrame when it holds none."""
    outcome, exit_code, reason = frame.get("outcome"), frame.get("exit_code"), frame.get("reason")
    if outcome not in _OUTCOMES or not isinstance(reason, str) or not (
        exit_code is None or (isinstance(exit_code, int) and not isinstance(exit_code, bool))
    ):
        raise MalformedFrame("finished: needs an outcome, an integer or null exit_code and a reason")
    return StepResult(outcome, exit_code, reason)
