"""A started server follows the log live through its projector process: its own writes
at once, and on PostgreSQL another node's writes through LISTEN/NOTIFY rather than the
poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from adapters.bootstrap import ServerContainer, build_server
from adapters.projector_process import ProjectorConfig
from adapters.settings import Settings
from adapters.store import open_application
from projections.pools import get_pool
from tests.conftest import Backend
from tests.helpers import TESTER, rid

pytestmark = pytest.mark.integration

# Far above any wait below: a write seen in time was not picked up by the poll.
SLOW_POLL_S = 30.0


@asynccontextmanager
async def running_server(data_dir: Path, database_url: str | None) -> AsyncIterator[ServerContainer]:
    """A started server (install, projector process) whose projector only polls every
    SLOW_POLL_S seconds. Its waits must be awaited: the projector's reports reach the
    watch through this event loop."""
    container = build_server(
        Settings(data_dir=data_dir, database_url=database_url),
        projector_config=ProjectorConfig(data_dir, database_url, poll_interval=SLOW_POLL_S),
    )
    try:
        container.start()
        await container.start_projections()
        yield container
    finally:
        await container.stop_projections()
        container.stop()


def test_a_command_is_visible_to_the_read_models_within_half_a_second(backend: Backend) -> None:
    async def body() -> list[float]:
        async with running_server(backend.data_dir, backend.database_url) as server:
            assert server.settings.admin_key_file.exists()
            latencies = []
            for _ in range(5):
                saved = server.app.create_pool(name=rid("live"), actor=TESTER)
                started = time.perf_counter()
                assert await server.projector.watch.wait_async(saved.position, timeout=0.5)
                latencies.append(time.perf_counter() - started)
                row = get_pool(server.views, str(saved.aggregate.id))
                assert row is not None and row["name"] == saved.aggregate.name
            return latencies

    latencies = asyncio.run(body())
    print(f"\n[{backend.kind}] own write -> read model: max {max(latencies) * 1000:.1f} ms")


def test_another_nodes_write_wakes_this_node_through_listen(tmp_path: Path, pg_schema_url: str) -> None:
    """A running server, and a second Application on its database and schema (another
    node). Only PostgreSQL is shared by nodes: SQLite is one node's file."""

    async def body() -> list[float]:
        async with running_server(tmp_path / "node-1", pg_schema_url) as server:
            other_node = open_application(tmp_path / "node-2", pg_schema_url)
            try:
                # The projector's listener connects in a thread of its own; until it
                # listens, a NOTIFY is lost (and only the slow poll would find the event).
                # Write until one is seen, then measure.
                deadline = time.monotonic() + 10
                while True:
                    probe = other_node.create_pool(name=rid("probe"), actor=TESTER).position
                    if await server.projector.watch.wait_async(probe, timeout=0.5):
                        break
                    assert time.monotonic() < deadline, "the PostgreSQL listener never woke the projector"
                latencies = []
                for _ in range(5):
                    saved = other_node.create_pool(name=rid("remote"), actor=TESTER)
                    started = time.perf_counter()
                    assert await server.projector.watch.wait_async(saved.position, timeout=2.0)
                    latencies.append(time.perf_counter() - started)
                    assert get_pool(server.views, str(saved.aggregate.id)) is not None
                return latencies
            finally:
                other_node.close()

    latencies = asyncio.run(body())
    print(f"\n[postgres] other node's write -> this node: max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 1.0  # well under even the default 1 s poll
