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

StartedCallback = Callable[[int], Awaitable[None]]
"""Awaited with the process id (which is also its process group id) once it runs."""


class StepRunner(Protocol):
    """Runs one script step somewhere and reports its log and outcome."""

    async def run(
        self,
        request: StepRequest,
        sink: LogSink,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
    ) -> StepResult:
        """Run ``request``; deliver its log to ``sink``; return once it has ended and
        everything it wrote has been delivered."""
        ...
