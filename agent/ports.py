"""What running one script step means, independent of where it runs.

The built-in worker (a child process of the server) and external agents both run steps
through :class:`agent.executor.StepExecutor`; a runner that reaches a machine another way
(e.g. over SSH) implements the same :class:`StepRunner` shape, so the caller that records
``StepStarted`` / log batches / ``StepFinished`` does not care which one it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

Syntax = Literal["bash", "sh", "python"]
Stream = Literal["stdout", "stderr", "system"]
Outcome = Literal["success", "failed", "timed_out", "cancelled"]

SYNTAXES: frozenset[str] = frozenset({"bash", "sh", "python"})


@dataclass(frozen=True)
class PackageFile:
    """A package the step needs in its working folder: ``sha256`` names its bytes (how
    the worker fetches and caches it); an archive (by ``file_name``) is extracted into a
    folder named ``id``, anything else is copied as ``file_name``."""

    id: str
    version: str
    sha256: str
    file_name: str


@dataclass(frozen=True)
class StepRequest:
    """One script step to run: what to run, with which extra variables, where, how long.

    Invalid values raise ``ValueError`` here, so a bad request never starts a process.
    """

    task_id: str
    step_name: str
    syntax: str  # "bash" | "sh" | "python"; it arrives from users, so it is checked here
    script: str
    env: Mapping[str, str]  # SHOAL_TASK_ID, SHOAL_STEP_NAME, ... filled by the caller
    work_root: Path  # parent of the per-step working folders
    timeout_s: float | None = None
    run_as_user: str | None = None  # needs root
    max_line_bytes: int = 64 * 1024
    max_log_bytes: int = 50 * 1024 * 1024
    packages: tuple[PackageFile, ...] = ()

    def __post_init__(self) -> None:
        if self.syntax not in SYNTAXES:
            raise ValueError(
                f"unknown script syntax {self.syntax!r}; expected one of {', '.join(sorted(SYNTAXES))}"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        if self.max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {self.max_line_bytes}")
        if self.max_log_bytes < 0:
            raise ValueError(f"max_log_bytes must not be negative, got {self.max_log_bytes}")
        if "\0" in self.script:
            raise ValueError("the script contains a NUL character")
        for key, value in self.env.items():
            # execve would reject these anyway, but only after the folder exists.
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"invalid environment variable {key!r}")
        if self.run_as_user is not None and not self.run_as_user:
            raise ValueError("run_as_user must be a user name or None")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a step's log."""

    at: datetime  # UTC, tz-aware, when the line was read
    stream: Stream  # "system" marks lines the executor itself writes
    text: str  # without the trailing newline


@dataclass(frozen=True)
class StepResult:
    """How a step ended."""

    outcome: Outcome
    exit_code: int | None  # None when the process never started or a signal ended it
    reason: str  # "" on success, else e.g. "exit code 3", "timed out after 5s", "cancelled"


LogSink = Callable[[Sequence[LogLine]], Awaitable[None]]
"""Receives a step's log in batches, in order; awaited, one batch at a time."""

class StartedCallback(Protocol):
    """Awaited with the process id (which is also its process group id) once it runs,
    and, from a runner on the same clock as the server, the moment it started."""

    def __call__(self, pid: int, at: datetime | None = None, /) -> Awaitable[None]:
        """The step's process runs."""
        ...


@dataclass(frozen=True)
class Artifact:
    """A file the step returned with ``shoal-artifact``, checked and ready to send:
    ``path`` is valid only while the callback that receives it runs."""

    name: str
    path: Path
    size: int
    sha256: str


ArtifactSink = Callable[[Artifact], Awaitable[None]]
"""Awaited once per artifact after the step's process ended, before its folder is removed
and before the runner returns; raising ArtifactNotReturned (agent.artifacts) marks that one
artifact as not returned, anything else propagates."""


class PackageSource(Protocol):
    """Where a worker gets package bytes (the packages object store)."""

    async def fetch(self, sha256: str, dest: Path, /) -> None:
        """Write the package whose SHA-256 is ``sha256`` into the new file ``dest``; raise
        when it cannot be had (the caller checks the hash)."""
        ...


class StepRunner(Protocol):
    """Runs one script step somewhere and reports its log and outcome."""

    async def run(
        self,
        request: StepRequest,
        sink: LogSink,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
        on_artifact: ArtifactSink | None = None,
    ) -> StepResult:
        """Run ``request``; deliver its log to ``sink`` and the files it returned to
        ``on_artifact``; return once it has ended and all of that has been delivered."""
        ...


# -- what the agent service needs from its transport (NatsBus satisfies these) --------------


class InboundRequest(Protocol):
    """A request sent to the agent (e.g. ``exec``, ``cancel``, ``health``)."""

    @property
    def data(self) -> bytes:
        """The message body (what the signature covers)."""
        ...

    @property
    def headers(self) -> dict[str, str] | None:
        """The message headers (the signature travels here)."""
        ...

    async def respond(self, data: bytes) -> None:
        """Answer the requester."""
        ...


class InboundDelivery(Protocol):
    """A message pulled from the agent's work queue."""

    @property
    def data(self) -> bytes:
        """The message body (what the signature covers)."""
        ...

    @property
    def headers(self) -> dict[str, str] | None:
        """The message headers (the signature travels here)."""
        ...

    async def ack(self) -> None:
        """Tell the queue this message is dealt with (it is not delivered again)."""
        ...


class PullSubscription(Protocol):
    """A bound pull consumer: ``fetch`` long-polls for up to ``batch`` messages and raises
    ``TimeoutError`` when none came in ``timeout`` seconds."""

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> Sequence[InboundDelivery]:
        """The next messages, at most ``batch``."""
        ...


RequestHandler = Callable[[InboundRequest], Awaitable[None]]


class AgentTransport(Protocol):
    """The messaging the agent service uses (``adapters.nats.bus.NatsBus`` fits)."""

    @property
    def is_connected(self) -> bool:
        """True while the connection is up."""
        ...

    async def start(
        self,
        servers: str | Sequence[str],
        name: str,
        *,
        user: str | None = None,
        password: str | None = None,
        inbox_prefix: str | None = None,
    ) -> None:
        """Connect; raises when no server accepts the connection in time."""
        ...

    async def stop(self, grace: float = 5.0) -> None:
        """Drain and close."""
        ...

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Core publish (at most once)."""
        ...

    async def subscribe(self, subject: str, handler: RequestHandler, queue: str | None = None) -> object:
        """Call ``handler`` for each message on ``subject``, one at a time."""
        ...

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until the server has seen everything sent so far."""
        ...

    async def js_publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish into a stream, de-duplicated by ``msg_id``; raises when not acknowledged."""
        ...

    async def pull_subscription(self, stream: str, durable: str) -> PullSubscription:
        """Bind to an existing durable pull consumer."""
        ...

    def add_error_listener(self, listener: Callable[[Exception], None]) -> None:
        """Have ``listener`` called with every connection error the client reports."""
        ...
