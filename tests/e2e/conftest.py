"""A real `shoal server` process per test module and back end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess, drop_schema, schema_url
from tests.e2e.tasks_support import OptionServer, served


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A running server on SQLite, then on PostgreSQL (a schema of its own)."""
    data_dir: Path = tmp_path_factory.mktemp("shoal")
    database_url = None
    base = None
    if request.param == "postgres":
        base = request.getfixturevalue("pg_url")
        database_url = schema_url(base)
    proc = ServerProcess(data_dir, database_url).start()
    try:
        yield proc
    finally:
        proc.stop()
        if base and database_url:
            drop_schema(base, database_url)


@pytest.fixture(scope="module")
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptionServer]:
    """A server of this module's own on SQLite, with extra options possible, for the task
    tests (they change server-wide settings, so they do not share the `server` fixture)."""
    with served(request, tmp_path_factory.mktemp("shoal")) as s:
        yield s


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own on SQLite (modules whose tests share one server but
    need not run on both back ends)."""
    proc = ServerProcess(tmp_path_factory.mktemp("shoal")).start()
    try:
        yield proc
    finally:
        proc.stop()
