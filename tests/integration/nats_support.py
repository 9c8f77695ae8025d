"""Helpers for the NATS integration tests: a running embedded server and a started bus
as async context managers (pytest-asyncio is not installed; tests use asyncio.run)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from adapters.nats import EmbeddedNats, EmbeddedNatsConfig, NatsBus


@asynccontextmanager
async def embedded(data_dir: Path, **config: Any) -> AsyncIterator[EmbeddedNats]:
    """An embedded nats-server on ``data_dir``, stopped on exit."""
    server = EmbeddedNats(EmbeddedNatsConfig(data_dir, **config))
    await server.start(timeout=10.0)
    try:
        yield server
    finally:
        await server.stop(grace=5.0)


@asynccontextmanager
async def bus_on(url: str, name: str = "test", **credentials: Any) -> AsyncIterator[NatsBus]:
    """A started NatsBus (quick reconnects, short first-connect deadline), stopped on exit."""
    bus = NatsBus(reconnect_wait=0.1, connect_timeout=2.0)
    await bus.start(url, name, **credentials)
    try:
        yield bus
    finally:
        await bus.stop(grace=2.0)


def process_alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie, which only awaits reaping, counts as gone)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 5.0,
                     what: str = "") -> None:
    """Poll ``check`` (sync or async) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check!r}")
        await asyncio.sleep(0.02)


def kill_quietly(pid: int) -> None:
    """SIGKILL ``pid`` if it still exists (cleanup after a test that may have failed)."""
    with suppress(ProcessLookupError):
        os.kill(pid, 9)
