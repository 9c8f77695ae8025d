"""The messages between the server and its agents, as they travel over NATS (JSON).

Server -> agent (*instructions*, always signed, see domain/signing.py):
  ExecStep      run a script step: ``shoal.agent.<id>.exec`` (listening, request/reply,
                answered with an ExecAnswer) or the work queue ``shoal.work.<id>`` (polling)
  CancelStep    stop a running step: ``shoal.agent.<id>.cancel`` (request/reply)
  HealthCheck   run the machine policy's health script: ``shoal.agent.<id>.health``
                (request/reply, answered with a HealthAnswer)

Agent -> server:
  Report        started / log / artifact / finished, on the JetStream subject
                ``shoal.reports.<id>``; ``message_id()`` is its Nats-Msg-Id, so a report sent
                twice counts once. An artifact travels as parts (``data``: base64 of at most
                ARTIFACT_PART_BYTES) followed by its manifest (``sha256``, ``size`` and the
                stream sequences of its parts, ``parts``), all before ``finished``; the server
                reads the parts back from the stream when the manifest arrives
  Heartbeat     core publish on ``shoal.heartbeat.<id>`` every few seconds

Every step message quotes the assignment's fencing token (the version of the Task event
that assigned the step): the server drops reports about an assignment that is no longer
current, so a worker that lost a step cannot finish it after it was given to another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

PROTOCOL_VERSION = 1

ReportKind = Literal["started", "log", "artifact", "finished"]
REPORT_KINDS = frozenset({"started", "log", "artifact", "finished"})
# Raw bytes per artifact part: base64 and JSON keep one report well under 512 KiB.
ARTIFACT_PART_BYTES = 256 * 1024
OUTCOMES = frozenset({"success", "failed", "timed_out", "cancelled"})
HEALTH_STATUSES = frozenset({"healthy", "has_warnings", "unhealthy"})

# The numbers a report carries become event fields and read-model columns, which hold
# signed 64-bit integers on every store: a larger one, once recorded, would stop the
# projections for good. Exit codes and process ids are held to what an operating system
# gives (a POSIX status or signal, a Windows exit code; a process id).
EXIT_CODES = range(-(2**31), 2**32)
PIDS = range(2**32)
COUNTS = range(2**63)  # assignments, sequences, sizes


class ProtocolError(ValueError):
    """A message that is not what its subject promises (malformed, wrong types)."""


@dataclass(frozen=True)
class PackageRef:
    """A package a step needs in its working folder: ``sha256`` names its bytes in the
    packages object store; ``file_name`` is what it was pushed as (an archive by its suffix)."""

    id: str
    version: str
    sha256: str
    file_name: str = ""


@dataclass(frozen=True)
class ExecStep:
    """Run one script step. ``expires_at`` (epoch seconds): an agent that finds this in
    its queue later than that drops it, the server has given up on it by then.
    ``capacity``: how many steps the worker may run at once, as the server has it when it
    assigns this one; the agent follows it, so a capacity changed on the server since the
    agent registered applies at once (None from servers that do not say)."""

    worker_id: str
    task_id: str
    step: str
    assignment: int
    syntax: str
    script: str
    env: dict[str, str]
    timeout_s: float | None
    max_log_bytes: int
    expires_at: float
    packages: tuple[PackageRef, ...] = ()
    capacity: int | None = None
    kind: Literal["exec"] = "exec"

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies this execution (a replayed instruction has the same key)."""
        return (self.task_id, self.step, self.assignment)


@dataclass(frozen=True)
class CancelStep:
    """Stop the step of this assignment if it still runs."""

    worker_id: str
    task_id: str
    step: str
    assignment: int
    kind: Literal["cancel"] = "cancel"


@dataclass(frozen=True)
class HealthCheck:
    """Run the policy's bash health script and answer with a HealthAnswer."""

    worker_id: str
    script: str
    timeout_s: float
    issued_at: float = field(default_factory=time.time)
    kind: Literal["health"] = "health"


Instruction = ExecStep | CancelStep | HealthCheck


@dataclass(frozen=True)
class ExecAnswer:
    """A listening agent's reply to ExecStep: it took the step, or why not."""

    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class HealthAnswer:
    """The health script's verdict and what it printed (the tail of it)."""

    status: str  # healthy | has_warnings | unhealthy
    detail: str


@dataclass(frozen=True)
class Report:
    """Progress of one step execution. ``seq`` counts this execution's reports from 0, in
    the order sent; log ``lines`` are ``[iso_time, stream, text]``."""

    worker_id: str
    task_id: str
    step: str
    assignment: int
    kind: ReportKind
    seq: int
    pid: int | None = None
    lines: tuple[tuple[str, str, str], ...] = ()
    outcome: str | None = None
    exit_code: int | None = None
    reason: str = ""
    # kind "artifact": ``name`` always; a part has ``data``, the manifest ``sha256``,
    # ``size`` and ``parts`` (the JetStream sequences of its parts, in order).
    name: str = ""
    data: str = ""
    size: int | None = None
    sha256: str = ""
    parts: tuple[int, ...] = ()
    # kind "started": when the step's process began, by the agent's clock (ISO 8601 with
    # an offset); empty from agents that do not say.
    started_at: str = ""

    @property
    def started_time(self) -> datetime | None:
        """``started_at`` as a time (decode_report has checked it), or None."""
        return datetime.fromisoformat(self.started_at) if self.started_at else None

    @property
    def is_manifest(self) -> bool:
        """An artifact report that closes an artifact (rather than carrying a part)."""
        return self.kind == "artifact" and bool(self.sha256)

    def message_id(self) -> str:
        """The JetStream de-duplication id of this report."""
        return f"{self.task_id}:{self.step}:{self.assignment}:{self.seq}"


@dataclass(frozen=True)
class Heartbeat:
    """I am alive, and this many steps run here now."""

    worker_id: str
    running: int
    at: float = field(default_factory=time.time)
    protocol: int = PROTOCOL_VERSION


def encode(message: Any) -> bytes:
    """A message dataclass as JSON bytes. orjson writes dataclasses (nested ones too)
    as objects of their fields in order, as ``asdict`` would, without its deep copy."""
    return orjson.dumps(message)


def _object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("a message is a JSON object")
    return value


def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    if name not in obj or obj[name] is None:
        if optional:
            return None
        raise ProtocolError(f"{name!r} is missing")
    value = obj[name]
    # bool is an int in Python, never a valid count or token here.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(f"{name!r} has the wrong type")
    if not isinstance(value, kind):
        raise ProtocolError(f"{name!r} has the wrong type")
    return value


def _int_in(obj: dict[str, Any], name: str, allowed: range, optional: bool = False) -> Any:
    value = _get(obj, name, int, optional)
    if value is not None and value not in allowed:
        raise ProtocolError(f"{name!r} is out of range")
    return value


def _aware_time(value: str, what: str) -> None:
    try:
        aware = datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        aware = False
    if not aware:
        raise ProtocolError(f"{what} is an ISO 8601 time with an offset")


def decode_instruction(data: bytes) -> Instruction:
    """Parse an instruction (its signature is the caller's to check, over ``data``)."""
    obj = _object(data)
    kind = obj.get("kind")
    if kind == "exec":
        env = _get(obj, "env", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ProtocolError("'env' maps names to strings")
        packages = []
        for p in _get(obj, "packages", list, optional=True) or []:
            if not isinstance(p, dict):
                raise ProtocolError("'packages' holds objects")
            packages.append(PackageRef(
                _get(p, "id", str), _get(p, "version", str), _get(p, "sha256", str),
                _get(p, "file_name", str, optional=True) or "",
            ))
        timeout = _get(obj, "timeout_s", (int, float), optional=True)
        capacity = _get(obj, "capacity", int, optional=True)
        if capacity is not None and capacity < 1:
            raise ProtocolError("'capacity' is at least 1")
        return ExecStep(
            worker_id=_get(obj, "worker_id", str), task_id=_get(obj, "task_id", str),
            step=_get(obj, "step", str), assignment=_get(obj, "assignment", int),
            syntax=_get(obj, "syntax", str), script=_get(obj, "script", str), env=env,
            timeout_s=float(timeout) if timeout is not None else None,
            max_log_bytes=_get(obj, "max_log_bytes", int),
            expires_at=float(_get(obj, "expires_at", (int, float))), packages=tuple(packages),
            capacity=capacity,
        )
    if kind == "cancel":
        return CancelStep(
            worker_id=_get(obj, "worker_id", str), task_id=_get(obj, "task_id", str),
            step=_get(obj, "step", str), assignment=_get(obj, "assignment", int),
        )
    if kind == "health":
        return HealthCheck(
            worker_id=_get(obj, "worker_id", str), script=_get(obj, "script", str),
            timeout_s=float(_get(obj, "timeout_s", (int, float))),
            issued_at=float(_get(obj, "issued_at", (int, float))),
        )
    raise ProtocolError(f"unknown instruction kind {kind!r}")


def decode_report(data: bytes) -> Report:
    """Parse a report; ProtocolError when it is malformed."""
    obj = _object(data)
    kind = _get(obj, "kind", str)
    if kind not in REPORT_KINDS:
        raise ProtocolError(f"unknown report kind {kind!r}")
    lines = []
    for line in _get(obj, "lines", list, optional=True) or []:
        if not (isinstance(line, list) and len(line) == 3 and all(isinstance(x, str) for x in line)):
            raise ProtocolError("a log line is [time, stream, text]")
        _aware_time(line[0], "a log line's time")
        lines.append((line[0], line[1], line[2]))
    outcome = _get(obj, "outcome", str, optional=True)
    if kind == "finished" and outcome not in OUTCOMES:
        raise ProtocolError(f"unknown outcome {outcome!r}")
    parts = _get(obj, "parts", list, optional=True) or []
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < COUNTS.stop for p in parts):
        raise ProtocolError("'parts' holds stream sequences")
    name = _get(obj, "name", str, optional=True) or ""
    part = _get(obj, "data", str, optional=True) or ""
    sha256 = _get(obj, "sha256", str, optional=True) or ""
    size = _int_in(obj, "size", COUNTS, optional=True)
    if kind == "artifact" and (not name or (sha256 and size is None) or not (sha256 or part)):
        raise ProtocolError("an artifact report has a name and either data or sha256 and size")
    started_at = _get(obj, "started_at", str, optional=True) or ""
    if started_at:
        _aware_time(started_at, "'started_at'")
    return Report(
        worker_id=_get(obj, "worker_id", str), task_id=_get(obj, "task_id", str),
        step=_get(obj, "step", str), assignment=_int_in(obj, "assignment", COUNTS), kind=kind,
        seq=_int_in(obj, "seq", COUNTS), pid=_int_in(obj, "pid", PIDS, optional=True),
        lines=tuple(lines), outcome=outcome,
        exit_code=_int_in(obj, "exit_code", EXIT_CODES, optional=True),
        reason=_get(obj, "reason", str, optional=True) or "",
        name=name, data=part, size=size, sha256=sha256, parts=tuple(parts), started_at=started_at,
    )


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Parse a heartbeat; ProtocolError when it is malformed."""
    obj = _object(data)
    return Heartbeat(
        worker_id=_get(obj, "worker_id", str), running=_get(obj, "running", int),
        at=float(_get(obj, "at", (int, float))), protocol=_get(obj, "protocol", int),
    )


def decode_exec_answer(data: bytes) -> ExecAnswer:
    """Parse a listening agent's answer to ExecStep."""
    obj = _object(data)
    reason = _get(obj, "reason", str, optional=True) or ""
    return ExecAnswer(accepted=_get(obj, "accepted", bool), reason=reason)


def decode_health_answer(data: bytes) -> HealthAnswer:
    """Parse an agent's answer to HealthCheck."""
    obj = _object(data)
    status = _get(obj, "status", str)
    if status not in HEALTH_STATUSES:
        raise ProtocolError(f"unknown health status {status!r}")
    return HealthAnswer(status=status, detail=_get(obj, "detail", str))
