"""The server's start as the lifespan runs it: a part that fails half-way leaves none of
the others running (the projector process, the embedded nats-server)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from adapters.bootstrap import build_server
from adapters.http.app import create_app
from adapters.settings import Settings

pytestmark = pytest.mark.integration


def running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_a_built_in_worker_that_fails_to_start_takes_the_started_nats_server_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    container = build_server(Settings(data_dir=data))
    assert container.builtin is not None and container.nats is not None
    nats_started = asyncio.Event()
    real_start = container.nats.start

    async def start_nats() -> None:
        await real_start()
        nats_started.set()

    async def broken() -> None:
        await nats_started.wait()  # fail only once the nats-server runs: the case to undo
        raise RuntimeError("the built-in worker broke")

    monkeypatch.setattr(container.nats, "start", start_nats)
    monkeypatch.setattr(container.builtin, "start", broken)
    app = create_app(container)
    watcher = asyncio.get_child_watcher()  # the lifespan installs its own; put it back

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pytest.fail("the server must not start")

    try:
        with pytest.raises(RuntimeError, match="the built-in worker broke"):
            asyncio.run(start())
    finally:
        asyncio.set_child_watcher(watcher)
    assert nats_started.is_set()
    assert not running(f"nats-server -c {data}"), "the nats-server was left running"
    assert not running(f"adapters.projector --data-dir {data} "), "the projector was left running"
